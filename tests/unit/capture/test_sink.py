"""The local JSONL sink (gateway/capture/sink.py): file sets, rotation by size, the size cap, failures,
and choosing a sink from the settings."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gateway.capture.sink import FEEDBACK, LocalSink, build_sink, files_in, task_set
from gateway.settings import Settings


def lines(n: int, size: int = 100, tag: str = "x") -> list[bytes]:
    return [(f'{{"{tag}": {i}, "pad": "'.encode() + b"p" * (size - 30)) + b'"}\n' for i in range(n)]


def read_set(folder: Path) -> list[bytes]:
    return [line for path in files_in(folder) for line in path.read_bytes().splitlines(keepends=True)]


def test_each_task_and_the_feedback_have_a_file_set(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, file_bytes=1 << 20, max_bytes=1 << 30)
    sink.write(task_set("support"), lines(2, tag="s"))
    sink.write(task_set("triage"), lines(1, tag="t"))
    sink.write(FEEDBACK, [b'{"request_id": "r1", "score": 1}\n'])
    sink.write(task_set("support"), lines(1, tag="s2"))
    sink.close()
    assert read_set(tmp_path / "tasks" / "support") == lines(2, tag="s") + lines(1, tag="s2")
    assert read_set(tmp_path / "tasks" / "triage") == lines(1, tag="t")
    assert read_set(tmp_path / "feedback") == [b'{"request_id": "r1", "score": 1}\n']
    assert len(files_in(tmp_path / "tasks" / "support")) == 1


def test_a_task_name_is_one_path_component() -> None:
    assert task_set("team/a:b") == "tasks/team%2Fa%3Ab"
    assert task_set("a/../../etc") == "tasks/a%2F..%2F..%2Fetc"


def test_files_rotate_by_size_and_keep_every_line_in_order(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, file_bytes=1024, max_bytes=1 << 30)
    written = lines(50)
    for line in written:
        sink.write("tasks/t", [line])
    sink.close()
    files = files_in(tmp_path / "tasks" / "t")
    assert len(files) == 5  # 10 lines of 100 bytes fit 1,024 bytes
    assert all(f.stat().st_size <= 1024 for f in files)
    assert read_set(tmp_path / "tasks" / "t") == written


def test_a_batch_larger_than_a_file_goes_into_one_file(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, file_bytes=1024, max_bytes=1 << 30)
    sink.write("tasks/t", lines(30))
    sink.write("tasks/t", lines(1))
    sink.close()
    assert [len(p.read_bytes().splitlines()) for p in files_in(tmp_path / "tasks" / "t")] == [30, 1]


def test_the_cap_deletes_the_oldest_files(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, file_bytes=1000, max_bytes=5000)
    for i in range(100):
        sink.write("tasks/t", lines(1, tag=f"n{i}"))
        folder = tmp_path / "tasks" / "t"
        assert sum(p.stat().st_size for p in files_in(folder)) <= 5000
    sink.close()
    kept = read_set(tmp_path / "tasks" / "t")
    assert kept == [line for i in range(100) for line in lines(1, tag=f"n{i}")][-len(kept):]  # the newest
    assert 40 <= len(kept) <= 50


def test_a_failed_write_raises_and_the_next_one_starts_a_new_file(tmp_path: Path) -> None:
    (tmp_path / "tasks").write_text("a file where a folder should be")
    sink = LocalSink(tmp_path, file_bytes=1 << 20, max_bytes=1 << 30)
    with pytest.raises(OSError):
        sink.write("tasks/t", lines(1))
    (tmp_path / "tasks").unlink()
    sink.write("tasks/t", lines(1))
    sink.close()
    assert read_set(tmp_path / "tasks" / "t") == lines(1)


class ListSink:
    def __init__(self) -> None:
        self.written: list[tuple[str, list[bytes]]] = []

    def write(self, file_set: str, data: Sequence[bytes]) -> None:
        self.written.append((file_set, list(data)))

    def close(self) -> None:
        pass


@pytest.fixture
def plugin() -> Iterator[str]:
    module = types.ModuleType("nanoroute_test_sink")
    module.make = lambda settings: ListSink()  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_build_sink(tmp_path: Path, plugin: str) -> None:
    local = build_sink(Settings(data_dir=tmp_path, capture_file_bytes=2048, capture_max_bytes=4096))
    assert isinstance(local, LocalSink)
    assert (local.root, local.file_bytes, local.max_bytes) == (tmp_path / "captures", 2048, 4096)
    assert isinstance(build_sink(Settings(capture_sink=f"{plugin}:make")), ListSink)
    with pytest.raises(ValueError, match=r"package\.module:factory"):
        build_sink(Settings(capture_sink="s3"))
