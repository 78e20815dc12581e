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
from gateway.tasks import Background

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
        self._background = Background("config")

    def start(self) -> None:
        if self.interval_s > 0:
            self._background.start(self._watch(), "watch")

    def reload_soon(self, trigger: str) -> None:
        """Reload in the background (SIGHUP); a failure is logged and kept like any other."""
        self._background.start(self._quiet_reload(trigger), f"reload ({trigger})")

    async def stop(self) -> None:
        await self._background.stop()

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
        out: list[tuple[float, int, int] | None] = []
        paths: tuple[str | Path, ...] = (self.path, *self._inputs)
        for path in paths:
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
            if self._stat_now() != self._stat:
                await self._quiet_reload("file changed")

    async def _quiet_reload(self, trigger: str) -> None:
        with contextlib.suppress(ConfigError):  # logged, counted and kept for /admin/config by reload()
            await self.reload(trigger)
