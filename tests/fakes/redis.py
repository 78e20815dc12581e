"""A real `redis-server` on a free loopback port, with its data in a folder of the test's own.

Not a fake: the store's tests need Redis's own expiry, persistence and failures. It can be killed, stopped
(SIGSTOP: a server that accepts connections and never answers) and restarted on the same port and folder.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.debian import program
from tests.fakes.servers import free_port

DEADLINE_S = 15.0


def redis_binary() -> str:
    """The `redis-server` on PATH; without one, the test is skipped locally and fails under CI."""
    return program("redis-server", "redis-server")


class RedisServer:
    """`redis-server` on 127.0.0.1, append-only file on with `appendfsync` as given (`always`: a write is on
    the disk before its answer, so a SIGKILL loses nothing), no RDB snapshots; `password` turns on
    `requirepass`."""

    def __init__(self, binary: str, folder: Path, *, appendfsync: str = "always", password: str | None = None) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.appendfsync = appendfsync
        self.password = password
        self._log_path = folder / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (on the same port and folder as before, after a `kill`) and wait until it answers PING."""
        assert self._proc is None, "already running"
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                "--appendfsync", self.appendfsync, "--dir", str(self.folder), "--daemonize", "no", "--logfile", ""]
        if self.password:
            args += ["--requirepass", self.password]
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"redis-server exited ({self._proc.returncode}):\n{self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.02)
        pytest.fail(f"redis-server took over {DEADLINE_S}s to answer PING:\n{self._log_tail()}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """End it with `sig` (SIGKILL: no shutdown of its own; SIGTERM: it flushes and exits) and wait."""
        proc, self._proc = self._proc, None
        assert proc is not None, "not running"
        proc.send_signal(sig)
        try:
            proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.kill(signal.SIGTERM)

    def _answers(self) -> bool:
        """PING answered: +PONG, or -NOAUTH from a server with a password (-LOADING while it reads its file)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]
