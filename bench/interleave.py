"""Two builds of the gateway side by side: what one change costs per request, with the machine's noise shared.

    .venv/bin/python bench/interleave.py BEFORE_DIR AFTER_DIR [--batch 4000] [--rounds 14]

Each directory is a checkout (`git worktree add` or `git archive REV | tar -x -C DIR`); both run with this
Python, pinned to CPU 1, in front of the shared harness's mock upstream on CPU 0, which this client shares.
Batches of JSON chat requests on one keep-alive connection alternate between the two (ABBA order), and each
gateway's CPU time is read from /proc around its own batches: a neighbour's load lands on both alike. Prints
each build's CPU per request by round and the per-round differences. /proc counts in clock ticks (10 ms), so
a batch should take a second or more. On the 2-core VM, two runs of one build side by side differ by up to
20 us per request (a process's memory layout and hash seeds): compare several runs, with both builds in the
same kind of folder.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("PEERBENCH", ROOT.parent / "shared" / "bench"))
BODY = orjson.dumps({"model": "small", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "Say hello in one short sentence."}]})
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
           b"accept: */*\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exchange(sock: socket.socket) -> None:
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the gateway closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the gateway answered {head[:200]!r}")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)


def connect(port: int, proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + 60
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the gateway on port {port} did not start") from None
            time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=14)
    a = ap.parse_args()
    os.sched_setaffinity(0, {0})
    mock_cmd = ["taskset", "-c", "0", sys.executable, str(HARNESS / "mock_upstream.py"), "--port", "18201"]
    mock = subprocess.Popen(mock_cmd, stderr=subprocess.DEVNULL)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write((ROOT / "bench" / "nanoroute.yaml.tmpl").read_text().replace("{mock_url}", "http://127.0.0.1:18201"))
    env = {**os.environ, "NANOROUTE_LOG_LEVEL": "warning"}
    builds = {"before": (a.before, 18210), "after": (a.after, 18211)}
    procs = {name: subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "gateway", "serve", "--config",
                                     config.name, "--port", str(port)], cwd=where, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, (where, port) in builds.items()}
    try:
        per_request: dict[str, list[float]] = {name: [] for name in builds}
        for name, (_, port) in builds.items():
            with connect(port, procs[name]) as sock:
                for _ in range(2000):  # warm
                    exchange(sock)
        for r in range(a.rounds):
            for name in (list(builds) if r % 2 == 0 else list(builds)[::-1]):
                # A new connection each batch: the other's batch may outlast the keep-alive timeout.
                with connect(builds[name][1], procs[name]) as sock:
                    before = cpu_s(procs[name].pid)
                    for _ in range(a.batch):
                        exchange(sock)
                    per_request[name].append(1e6 * (cpu_s(procs[name].pid) - before) / a.batch)
        for name, values in per_request.items():
            print(f"{name}: median {statistics.median(values):.1f} us/req, rounds "
                  f"{', '.join(f'{v:.0f}' for v in values)}")
        diffs = [x - y for x, y in zip(per_request["after"], per_request["before"], strict=True)]
        print(f"after - before, per round: mean {statistics.mean(diffs):+.1f} us, "
              f"median {statistics.median(diffs):+.1f} us, stdev {statistics.stdev(diffs):.1f} us")
    finally:
        for proc in (*procs.values(), mock):
            proc.terminate()
            proc.wait(10)
        os.unlink(config.name)


if __name__ == "__main__":
    main()
