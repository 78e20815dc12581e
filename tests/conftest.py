from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.console_stack import Operator, Stack, start
from tests.fakes.redis import RedisServer, redis_binary
from tests.fakes.servers import LoopThread, Servers
from tests.unit.learned.routers import rows, three, train_router, write


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


@pytest.fixture(scope="session")
def router_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A routing dataset whose answer is known (tests/unit/learned/routers.py's `rows`), written once."""
    return write(tmp_path_factory.mktemp("data") / "routing.jsonl", rows(300))


@pytest.fixture(scope="session")
def router_artifact(router_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained on `router_data` (seed 3) once per session, predicting `cheap` and `strong`: copy it
    to change it."""
    return train_router(router_data, tmp_path_factory.mktemp("router") / "triage")


@pytest.fixture(scope="session")
def three_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained on `three(300)` once per session, predicting `cheap`, `mid` and `strong`."""
    folder = tmp_path_factory.mktemp("three")
    return train_router(write(folder / "three.jsonl", three(300)), folder / "router")


@pytest.fixture
def stack(servers: Servers, tmp_path: Path) -> Stack:
    """The console's gateway and its fakes (tests/api/console_stack.py), for the console's API and security tests."""
    return start(servers, tmp_path)


@pytest.fixture
def operator(stack: Stack) -> Iterator[Operator]:
    """An operator logged in to `stack`'s console."""
    with Operator(stack.root).logged_in() as op:
        yield op
