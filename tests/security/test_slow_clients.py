"""Slow and oversized clients against a real gateway on loopback, over raw sockets.

Each test plays one attack (heads or bodies trickled a byte at a time, an endless header, more connections
than the cap, idle keep-alive connections) and checks both that the gateway cuts it off by its limit and,
where it matters, that other clients are still served meanwhile. Deadlines are set short (1 s) and checked
with generous slack, since CI machines are small and loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai

from tests.api.support import MESSAGES, single_model
from tests.fakes.servers import Servers, free_port

DEADLINE = 1.0  # the header, body and keep-alive deadlines these tests set
SLACK = 2.0  # how late past a deadline a close may come on a loaded 2-core machine
EARLY = 0.8  # a close before this much of the deadline would mean it is not the deadline that closed it
CROWD = 50
PACE = 0.1  # seconds between two bytes of one slow client
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


def _port(base_url: str) -> int:
    port = urlsplit(base_url).port
    assert port is not None
    return port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _head(method: str, path: str, *extra: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *extra, "", ""]).encode()


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection and read its whole answer (content-length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """What the gateway sends before it closes `sock`, and when it closed it (None: still open at `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, None
    except ConnectionResetError:
        pass
    return data, time.monotonic()


class Trickle:
    """Slow clients: connections that each send one byte every PACE seconds and never finish their request.

    `run` keeps them trickling until the gateway has closed them all or `limit` seconds have passed, and
    records, per connection, when it was closed and what the gateway sent before closing it.
    """

    def __init__(self, socks: list[socket.socket], started: float) -> None:
        self.socks = socks
        self.started = started
        self.closed: dict[socket.socket, float] = {}
        self.received: dict[socket.socket, bytes] = {s: b"" for s in socks}

    def run(self, limit: float, midway: Callable[[], None]) -> None:
        """Trickle; call `midway` once, a few bytes in, while every slow client is still connected."""
        sel = selectors.DefaultSelector()
        for s in self.socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        still = set(self.socks)
        end = self.started + limit
        next_byte = time.monotonic()
        while still and time.monotonic() < end:
            now = time.monotonic()
            if now >= next_byte:
                for s in still:
                    with contextlib.suppress(OSError):  # closed by the gateway: the read below records it
                        s.send(b"a")
                next_byte = now + PACE
                if now - self.started > 3 * PACE and midway is not None:
                    assert len(still) == len(self.socks), "slow clients were cut off long before the deadline"
                    midway()
                    midway = None  # type: ignore[assignment]
            for key, _ in sel.select(max(0.0, min(next_byte, end) - time.monotonic())):
                s = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    self.received[s] += chunk
                else:
                    self.closed[s] = time.monotonic()
                    still.discard(s)
                    sel.unregister(s)
        sel.close()
        for s in self.socks:
            s.close()


def _served_promptly(sdk: openai.OpenAI) -> Callable[[], None]:
    """A normal chat request through the official SDK: it must answer 200 within a second or two."""

    def check() -> None:
        t0 = time.monotonic()
        raw = sdk.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.http_response.status_code == 200
        assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
        assert time.monotonic() - t0 < SLACK

    return check


def test_trickled_headers_are_cut_off_at_the_header_deadline(servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), header_timeout_s=DEADLINE)
    port = _port(base)
    socks = [_connect(port) for _ in range(CROWD)]
    # Half of them first make a whole request, then trickle the next one on the same (keep-alive) connection.
    for s in socks[: CROWD // 2]:
        assert _exchange(s, _head("GET", "/healthz"))[0] == 200
    started = time.monotonic()
    for s in socks:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
    slow = Trickle(socks, started)
    with openai.OpenAI(base_url=base, api_key="sk-client", max_retries=0, timeout=10) as sdk:
        slow.run(DEADLINE + SLACK, _served_promptly(sdk))

    assert len(slow.closed) == CROWD, f"{CROWD - len(slow.closed)} slow clients still connected"
    for s, at in slow.closed.items():
        assert EARLY * DEADLINE < at - started < DEADLINE + SLACK
        assert slow.received[s] == b"" or slow.received[s].startswith(b"HTTP/1.1 408 ")


def test_connections_that_send_nothing_are_closed_at_the_header_deadline(servers: Servers) -> None:
    base = servers.gateway(single_model(servers.upstream()), header_timeout_s=DEADLINE)
    socks = [_connect(_port(base)) for _ in range(10)]
    started = time.monotonic()
    for s in socks:
        data, at = _read_until_closed(s, DEADLINE + SLACK - (time.monotonic() - started))
        assert at is not None, "a silent connection is still open"
        assert EARLY * DEADLINE < at - started < DEADLINE + SLACK
        # Nothing was asked, so nothing is answered: a client that opened a connection ahead of need
        # must not read a stray 408 as the answer to its next request.
        assert data == b""
        s.close()


def test_trickled_bodies_are_cut_off_at_the_body_deadline_with_408(servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), body_timeout_s=DEADLINE)
    port = _port(base)
    socks = [_connect(port) for _ in range(CROWD)]
    # Most go to the hot path (pure ASGI), some to a FastAPI route, which reads its body its own way.
    paths = ["/v1/feedback" if i % 5 == 0 else "/v1/chat/completions" for i in range(CROWD)]
    started = time.monotonic()
    for s, path in zip(socks, paths, strict=True):
        s.sendall(_head("POST", path, "content-type: application/json", "content-length: 100000") + b'{"a": "')
    slow = Trickle(socks, started)
    with openai.OpenAI(base_url=base, api_key="sk-client", max_retries=0, timeout=10) as sdk:
        slow.run(DEADLINE + SLACK, _served_promptly(sdk))

    assert len(slow.closed) == CROWD, f"{CROWD - len(slow.closed)} slow clients still connected"
    for s, at in slow.closed.items():
        assert EARLY * DEADLINE < at - started < DEADLINE + SLACK
        head, _, body = slow.received[s].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), slow.received[s]
        assert json.loads(body)["error"]["code"] == "request_timeout"
    assert len(up.seen) == 1  # only the SDK's request reached the upstream


def test_a_one_megabyte_header_gets_431_before_the_gateway_reads_it_all(servers: Servers) -> None:
    base = servers.gateway(single_model(servers.upstream()))  # the default limit, 64 KiB
    s = _connect(_port(base))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
    sent, piece = 0, b"a" * 16384
    answered = False
    selector = selectors.DefaultSelector()
    selector.register(s, selectors.EVENT_READ)
    while sent < 1 << 20 and not answered:
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
        answered = bool(selector.select(0.01))
    selector.close()
    data, closed = _read_until_closed(s, SLACK)
    s.close()
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_header_fields_too_large"
    assert closed is not None
    assert sent < 512 * 1024, f"the gateway let {sent} bytes of header in before answering"


def test_heads_over_the_limit_get_431_whole_or_split_while_one_under_it_is_served(servers: Servers) -> None:
    base = servers.gateway(single_model(servers.upstream()), max_header_bytes=32 * 1024)
    port = _port(base)
    with _connect(port) as s:
        assert _exchange(s, _head("GET", "/healthz", "x-pad: " + "a" * (30 * 1024)))[0] == 200
    too_large = _head("GET", "/healthz", "x-pad: " + "a" * (40 * 1024))
    for pieces in ([too_large], [too_large[:20000], too_large[20000:]]):
        with _connect(port) as s:
            for piece in pieces:
                s.sendall(piece)
                time.sleep(0.2)  # its own read
            data, closed = _read_until_closed(s, SLACK)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert closed is not None


def test_connections_over_the_cap_are_refused_while_existing_ones_work(servers: Servers) -> None:
    cap = 8
    base = servers.gateway(single_model(servers.upstream()), max_connections=cap)
    port = _port(base)
    held = [_connect(port) for _ in range(cap)]
    for s in held:
        assert _exchange(s, _head("GET", "/healthz"))[0] == 200

    with _connect(port) as extra:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            extra.sendall(_head("GET", "/healthz"))
        data, closed = _read_until_closed(extra, SLACK)
    assert closed is not None, "the connection over the cap is still open"
    assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data[:200]

    for s in held:  # the connections within the cap were not disturbed
        assert _exchange(s, _head("GET", "/healthz"))[0] == 200
    held.pop().close()
    deadline = time.monotonic() + SLACK
    while True:  # once one leaves, a new one takes its place
        with _connect(port) as s:
            try:
                assert _exchange(s, _head("GET", "/healthz"))[0] == 200
                break
            except (AssertionError, ConnectionResetError):
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.05)
    for s in held:
        s.close()


def test_idle_keep_alive_connections_are_closed_at_the_keep_alive_deadline(servers: Servers) -> None:
    base = servers.gateway(single_model(servers.upstream()), keep_alive_s=DEADLINE)
    with _connect(_port(base)) as s:
        assert _exchange(s, _head("GET", "/healthz"))[0] == 200
        answered = time.monotonic()
        data, closed = _read_until_closed(s, DEADLINE + SLACK)
    assert closed is not None, "an idle keep-alive connection is still open"
    assert data == b""
    assert EARLY * DEADLINE < closed - answered < DEADLINE + SLACK


def test_nanoroute_serve_applies_the_same_limits_in_every_worker(servers: Servers, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(single_model(servers.upstream()))
    port = free_port()
    env = {**os.environ, "NANOROUTE_HEADER_TIMEOUT_S": str(DEADLINE), "NANOROUTE_MAX_HEADER_BYTES": "16384",
           "NANOROUTE_ACCESS_LOG": "false", "NANOROUTE_RELOAD_INTERVAL_S": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
        # Several connections, so that the kernel hands some to each worker.
        socks = [_connect(port) for _ in range(8)]
        started = time.monotonic()
        for s in socks:
            _, at = _read_until_closed(s, DEADLINE + SLACK - (time.monotonic() - started))
            assert at is not None and EARLY * DEADLINE < at - started < DEADLINE + SLACK
            s.close()
        for _ in range(8):
            with _connect(port) as s:
                s.sendall(_head("GET", "/healthz", "x-pad: " + "a" * 20000))
                data, _ = _read_until_closed(s, SLACK)
            assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                time.sleep(1.0)  # both workers up
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")
