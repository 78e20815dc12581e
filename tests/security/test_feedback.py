"""Attack: steer what an adapter learns by scoring other clients' answers.

Feedback used to be keyed by request id alone: any key could score any request, and a client could send
its own `X-Request-Id` equal to another's so that one score landed on both. Feedback now counts only for
requests made with the same key: the export joins it on (key, request id).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from gateway.capture.sink import files_in
from gateway.distill.dataset import Export, export
from tests.api.support import wait_until
from tests.fakes.servers import Servers

ALICE, MALLORY = "alice-key-0123456789ab", "mallory-key-0123456789"


def test_feedback_counts_only_for_the_key_that_made_the_request(servers: Servers, tmp_path: Path) -> None:
    up = servers.upstream()
    base = servers.gateway(f"""
backends:
  b: {{type: openai, url: {up.url}}}
models:
  teacher: {{backend: b}}
policies:
  - {{name: support, match: {{task: support}}, candidates: [teacher], capture: {{sample: 1.0}}}}
""", data_dir=tmp_path, api_keys=f"alice={ALICE},mallory={MALLORY}")

    def ask(key: str, request_id: str, text: str) -> None:
        resp = httpx.post(f"{base}/chat/completions", headers={
            "Authorization": f"Bearer {key}", "X-Request-Id": request_id, "X-Nanoroute-Task": "support"},
            json={"model": "teacher", "messages": [{"role": "user", "content": text}]})
        assert resp.status_code == 200

    def score(key: str, request_id: str, value: float) -> None:
        resp = httpx.post(f"{base}/feedback", headers={"Authorization": f"Bearer {key}"},
                          json={"request_id": request_id, "score": value})
        assert resp.status_code == 200

    ask(ALICE, "shared-1", "alice asks about a refund")
    ask(MALLORY, "shared-1", "mallory asks the same id")  # a request id chosen to collide with alice's
    ask(ALICE, "alice-2", "alice asks about shipping")
    folder = tmp_path / "captures" / "tasks" / "support"
    wait_until(lambda: sum(len(f.read_text().splitlines()) for f in files_in(folder)) == 3)

    score(ALICE, "shared-1", 1.0)
    score(MALLORY, "shared-1", 0.0)  # after alice's: keyed by id alone, it would override hers
    score(MALLORY, "alice-2", 0.0)  # a request mallory did not make
    stats = export(Export("support", tmp_path / "captures", tmp_path / "out", eval_fraction=0, min_score=0.5))

    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    kept = [json.loads(line)["messages"][0]["content"] for line in lines]
    assert sorted(kept) == ["alice asks about a refund", "alice asks about shipping"]
    assert stats["dropped"] == {"score": 1}  # mallory's own request, by mallory's own score
