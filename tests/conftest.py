from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
