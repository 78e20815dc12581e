"""Where captures go: a `Sink` takes lines for a file set and keeps them.

`LocalSink` (the default) appends JSONL files under one folder, one file set a task, one for feedback and
one for rollouts' comparisons, each file created 0600 and each folder it makes 0700 (they hold prompts
and answers):

    <capture dir>/tasks/<task>/<UTC time>-<pid>.jsonl     captured requests with their answers
    <capture dir>/feedback/<UTC time>-<pid>.jsonl         feedback, keyed by request id
    <capture dir>/comparisons/<UTC time>-<pid>.jsonl      rollouts' scores of an answer, keyed by request id

A file is closed once it passes `file_bytes`, and when a new one opens the oldest files of its set are
deleted until the set fits `max_bytes`. Each process writes files of its own (the pid in the name), so
several workers can share the folder. Another sink (object storage) is a class with the same two
methods, named by `NANOROUTE_CAPTURE_SINK=package.module:factory`; see docs/configuration.md.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import quote

from gateway.files import private_dir

if TYPE_CHECKING:
    from gateway.settings import Settings

FEEDBACK = "feedback"
COMPARISONS = "comparisons"


def task_set(task: str) -> str:
    """The file set of a task: one path component, whatever characters a task name holds."""
    return f"tasks/{quote(task, safe='')}"


class Sink(Protocol):
    def write(self, file_set: str, lines: Sequence[bytes]) -> None:
        """Keep `lines` (each ends with a newline) in `file_set`. Called from worker threads, possibly
        several at once (captures, feedback, comparisons); raises OSError (or anything) when they could not
        be kept."""

    def close(self) -> None: ...


class _Open:
    __slots__ = ("file", "size")

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.size = 0


class LocalSink:
    def __init__(self, root: Path, file_bytes: int, max_bytes: int) -> None:
        self.root = root
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()  # captures, feedback and comparisons may be written at once

    def write(self, file_set: str, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        with self._lock:
            current = self._open.get(file_set)
            if current is None or (current.size and current.size + len(data) > self.file_bytes):
                if current is not None:
                    self._close(file_set)
                current = self._open[file_set] = _Open(self._start(file_set))
            try:
                current.file.write(data)
                current.file.flush()
            except BaseException:
                self._close(file_set)  # the next write starts a new file rather than append to a torn one
                raise
            current.size += len(data)

    def close(self) -> None:
        with self._lock:
            for file_set in list(self._open):
                self._close(file_set)

    def _close(self, file_set: str) -> None:
        current = self._open.pop(file_set)
        with contextlib.suppress(OSError):
            current.file.close()

    def _start(self, file_set: str) -> IO[bytes]:
        folder = self.root / file_set
        private_dir(folder)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
        self._trim(folder)
        return open_private(folder / f"{stamp}-{os.getpid()}.jsonl")  # kept open across writes

    def _trim(self, folder: Path) -> None:
        """Delete the oldest files until the set, with the file about to start, fits `max_bytes`."""
        found = []
        for path in files_in(folder):
            try:
                found.append((path, path.stat().st_size))
            except FileNotFoundError:  # another worker trimmed it first
                continue
        total = sum(size for _, size in found)
        for path, size in found:
            if total + self.file_bytes <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def open_private(path: Path) -> IO[bytes]:
    """Open `path` to append, creating it readable and writable by this user alone (0600)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def write_private(path: Path, data: bytes) -> None:
    """Write `path` whole, readable and writable by this user alone (0600), whatever it was before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)
        f.write(data)


def files_in(folder: Path) -> list[Path]:
    """A file set's files, oldest first (their names start with the time they were opened)."""
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def build_sink(settings: Settings) -> Sink:
    """The sink that `NANOROUTE_CAPTURE_SINK` names: `local`, or `package.module:factory`, a callable that
    takes the settings and returns a sink."""
    if settings.capture_sink == "local":
        return LocalSink(settings.capture_path, settings.capture_file_bytes, settings.capture_max_bytes)
    module, sep, attr = settings.capture_sink.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"NANOROUTE_CAPTURE_SINK must be 'local' or 'package.module:factory', "
                         f"not {settings.capture_sink!r}")
    factory = getattr(importlib.import_module(module), attr)
    sink: Sink = factory(settings)
    return sink
