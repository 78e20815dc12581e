"""CORS, for apps that call the gateway from a browser: on only when `NANOROUTE_CORS_ORIGINS` is set.

Starlette's CORSMiddleware (pure ASGI: streams pass through untouched) wraps the whole app, the proxied
endpoints included, so a preflight to any path is answered here, before any key is asked for. Any
request header may be sent (the preflight's own list is echoed back: OpenAI's and Anthropic's SDKs add
their own `x-stainless-*` and `anthropic-*` headers); no cookies are used, so none are allowed. Answers
to an allowed origin let the page read the gateway's own headers.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.pipeline.ingress import request_id

EXPOSED = (
    "x-request-id", "x-nanoroute-policy", "x-nanoroute-reason", "x-nanoroute-model", "x-nanoroute-fallbacks",
    "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
)
"""Response headers a page may read; `x-ratelimit-*` are OpenAI's names for them."""
MAX_AGE_S = 600
"""How long a browser may keep a preflight's answer."""


class Cors(CORSMiddleware):
    """Starlette's middleware, with a preflight answered as `204 No Content` and with its request id."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=origins, allow_methods=("GET", "POST"), allow_headers=("*",),
                         expose_headers=EXPOSED, max_age=MAX_AGE_S)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        given = request_headers.get("x-request-id")
        rid = request_id(given.encode("latin-1") if given is not None else None)
        if answer.status_code != 200:  # refused: Starlette's 400 says which part was not allowed
            answer.headers["x-request-id"] = rid
            return answer
        headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
        return Response(status_code=204, headers={**headers, "x-request-id": rid})
