"""Live config edits: watch the file, validate a new version fully, then swap it in as a whole.

A reload is triggered by the file, or an adapter manifest it reads, changing (polled: works for plain
files and for Kubernetes ConfigMap mounts, whose files are swapped through symlinks), by
`POST /admin/reload` and by SIGHUP. A version
that fails to load changes nothing: the old one keeps serving, and the error is kept for
`GET /admin/config`, logged and counted. Loading the same bytes again is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config.loader import fingerprint, load_text
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError

log = logging.getLogger("nanoroute")


@dataclass(frozen=True, slots=True)
class LoadError:
    source: str
    version: str
    problems: tuple[tuple[str, str], ...]
    at: float


class Reloader:
    """Loads new versions of one config file and hands good ones to `apply`."""

    def __init__(self, path: Path, current: RoutingTable, apply: Callable[[RoutingTable], Awaitable[None]],
                 on_result: Callable[[str], None], interval_s: float = 2.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.last_error: LoadError | None = None
        self._apply = apply
        self._on_result = on_result
        self._digest = current.version
        self._inputs = current.inputs
        self._stat = self._stat_now()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self, trigger: str) -> RoutingTable | None:
        """Load the file now; the new table when it was applied, None when unchanged. Raises ConfigError."""
        async with self._lock:
            self._stat = self._stat_now()
            source = str(self.path)
            try:
                raw = await asyncio.to_thread(self.path.read_bytes)
            except OSError as exc:
                self._failed(ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]), "", trigger)
                raise self._as_error() from None
            digest = fingerprint(raw, self._inputs)
            if digest == self._digest:
                return None
            try:
                table = load_text(raw, source)
            except ConfigError as exc:
                self._failed(exc, digest, trigger)
                raise
            await self._apply(table)
            self._digest, self._inputs = table.version, table.inputs
            self._stat = self._stat_now()
            self.last_error = None
            self._on_result("success")
            log.info("config %s: version %s is now serving (%s)", source, table.version, trigger)
            return table

    def _failed(self, exc: ConfigError, digest: str, trigger: str) -> None:
        self.last_error = LoadError(exc.source, digest, exc.problems, time.time())
        self._on_result("error")
        log.error("config reload (%s) failed, the previous version keeps serving: %s", trigger, exc.message)

    def _as_error(self) -> ConfigError:
        assert self.last_error is not None
        return ConfigError(self.last_error.source, self.last_error.problems)

    def _stat_now(self) -> tuple[tuple[float, int, int] | None, ...]:
        """The config file's and its manifests' mtime, size and inode (None for one that is missing)."""
        out = []
        for path in (self.path, *self._inputs):
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_mtime, st.st_size, st.st_ino))
        return tuple(out)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._stat_now() == self._stat:
                continue
            with contextlib.suppress(ConfigError):
                await self.reload("file changed")
