from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.redis import RedisServer, redis_binary
from tests.fakes.servers import LoopThread, Servers


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


@pytest.fixture
def servers(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Servers]:
    s = Servers(loop_thread, tmp_path)
    yield s
    s.close()


StartRedis = Callable[..., RedisServer]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start real `redis-server`s (`RedisServer`'s options), each in a folder of its own; all stopped at the end.
    Skipped locally, failed under CI, when redis-server is not installed."""
    binary = redis_binary()
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(binary, tmp_path / f"redis-{len(started)}", **options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(start_redis: StartRedis) -> RedisServer:
    """One real `redis-server` on loopback (append-only, `appendfsync always`), stopped after the test."""
    return start_redis()
