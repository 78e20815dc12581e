"""Admission: whether a request may go on at all, before anything is spent on it.

Each check answers with nothing (go on) or a ClientError (why not, in the caller's protocol). A check
that needs only the headers runs before the body is read (`before_body`: a key); the others once the
request is routed (`ctx.request` and `ctx.decision` are set). Keys are checked by `keys.py`, limits and
budgets by `limits.py`; a new check is a module beside it, registered in `gateway/pipeline/__init__.py`.
"""

from __future__ import annotations

from typing import Protocol

from gateway.pipeline.context import RequestContext


class Admission(Protocol):
    before_body: bool
    """True: checked on the headers alone, before the body is read; False: once the request is routed."""

    async def admit(self, ctx: RequestContext) -> None:
        """Let the request in, or raise a ClientError that says why not."""
