"""A `learned` policy through a running gateway, with the official SDK: prompts routed by the router's
predictions, /admin/explain's figures, predictions met by feedback and rollout comparisons on /metrics, and a
new (or a broken) artifact picked up by a reload.

The routers are tests/unit/learned/routers.py's, trained once per session (tests/conftest.py) and copied to
`routers/triage` beside the gateway's config file, where the policy names them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.learned.model import load
from tests.api.observe import Scrape
from tests.api.support import Client, wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream
from tests.unit.learned.routers import ASK_EASY, ASK_HARD, chat, rows, train_router, write

ADMIN_KEY = "adm-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
KEYS = "app=sk-app-key-0123456789,other=sk-other-key-0123456789"
ROUTER_AT = "policies[0].router (line 8)"


def config(cheap: FakeUpstream, strong: FakeUpstream, mid: FakeUpstream | None = None, extra: str = "") -> str:
    """Backends for the cheap and the strong model (and `mid`); one `learned` policy, `triage`, on line 8
    (without `mid`)."""
    mid_backend = "" if mid is None else f"  md: {{type: openai, url: {mid.url}}}\n"
    mid_model = "" if mid is None else "  mid:    {backend: md, price: {input: 1, output: 2}}\n"
    return f"""\
backends:
  lo: {{type: openai, url: {cheap.url}}}
  hi: {{type: openai, url: {strong.url}}}
{mid_backend}models:
  cheap:  {{backend: lo, price: {{input: 0.1, output: 0.4}}}}
  strong: {{backend: hi, price: {{input: 2.5, output: 10}}}}
{mid_model}policies:
  - {{name: triage, strategy: learned, router: routers/triage, candidates: [strong, cheap],
     require: {{min_quality: 0.9}}{extra}}}
"""


def start(servers: Servers, artifact: Path, mid: FakeUpstream | None = None, extra: str = "",
          **settings: Any) -> tuple[str, Path, FakeUpstream, FakeUpstream]:
    """A gateway whose policy's router is a copy of `artifact`; its base URL, the copy and the upstreams."""
    folder = Path(shutil.copytree(artifact, servers.tmp / "routers" / "triage"))
    cheap, strong = servers.upstream("cheap", answer="returns"), servers.upstream("strong", answer="billing")
    settings.setdefault("reload_interval_s", 0)
    return servers.gateway(config(cheap, strong, mid, extra), admin_key=ADMIN_KEY, **settings), folder, cheap, strong


def ask(sdk: openai.OpenAI, text: str) -> tuple[str, str]:
    """The model that answered `text`, and the request's id."""
    raw = sdk.chat.completions.with_raw_response.create(model="m", messages=chat(text))  # type: ignore[arg-type]
    assert raw.headers["x-nanoroute-policy"] == "triage"
    assert raw.headers["x-nanoroute-reason"] == "learned"
    return raw.headers["x-nanoroute-model"], raw.headers["x-request-id"]


def explain(base: str, text: str, key: str | None = None) -> dict[str, Any]:
    headers = {**ADMIN, **({"X-Nanoroute-Key": key} if key else {})}
    resp = httpx.post(f"{base.removesuffix('/v1')}/admin/explain", json={"model": "m", "messages": chat(text)},
                      headers=headers)
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


def reload(base: str) -> httpx.Response:
    return httpx.post(f"{base.removesuffix('/v1')}/admin/reload", headers=ADMIN)


def predicted(explained: dict[str, Any]) -> dict[str, float]:
    return {c["model"]: c["predicted_quality"] for c in explained["candidates"]}


def test_easy_prompts_go_to_the_cheap_model_and_hard_ones_to_the_strong(
    servers: Servers, client: Client, router_artifact: Path
) -> None:
    base, _, cheap, strong = start(servers, router_artifact)
    sdk = client(base)
    assert ask(sdk, ASK_EASY)[0] == "cheap"
    assert ask(sdk, ASK_HARD)[0] == "strong"
    assert ask(sdk, "hello where is my parcel today")[0] == "cheap"
    assert (len(cheap.seen), len(strong.seen)) == (2, 1)
    assert strong.seen[0].body["messages"] == chat(ASK_HARD)


def test_explain_shows_each_candidates_predicted_quality_and_the_threshold(
    servers: Servers, router_artifact: Path
) -> None:
    base, folder, _, _ = start(servers, router_artifact)
    router = load(folder)
    threshold = servers.app_of().state.table.policies[0].learned.threshold  # type: ignore[union-attr]
    easy, hard = explain(base, ASK_EASY), explain(base, ASK_HARD)
    assert {k: easy[k] for k in ("policy", "reason", "strategy", "choice", "chain")} == {
        "policy": "triage", "reason": "learned", "strategy": "learned", "choice": "cheap",
        "chain": ["cheap", "strong"]}
    assert (hard["choice"], hard["chain"]) == ("strong", ["strong", "cheap"])
    for shown, text in ((easy, ASK_EASY), (hard, ASK_HARD)):
        expected = dict(zip(router.models, router.predict({"messages": chat(text)}), strict=True))
        assert predicted(shown) == pytest.approx(expected, abs=1e-6)
        assert [c["eligible"] for c in shown["candidates"]] == [True, True]
        assert shown["learned"] == easy["learned"]
    assert predicted(easy)["cheap"] >= threshold.value > predicted(hard)["cheap"]
    assert easy["learned"] == {
        "router": str(folder), "version": router.version, "threshold": round(threshold.value, 6),
        "rule": "the cheapest candidate whose predicted quality reaches the threshold, else the dearest",
        "heldout": {"rows": threshold.rows, "quality": round(threshold.quality, 4),
                    "shares": {"cheap": round(threshold.shares[0], 4), "strong": round(threshold.shares[1], 4)}}}
    assert easy["learned"]["heldout"]["rows"] == router.manifest["data"]["heldout"]
    assert easy["learned"]["heldout"]["quality"] >= 0.9


def test_feedback_meets_the_prediction_of_the_model_that_answered(
    servers: Servers, client: Client, router_artifact: Path
) -> None:
    base, _, _, _ = start(servers, router_artifact, api_keys=KEYS)
    app, other = client(base, "sk-app-key-0123456789"), client(base, "sk-other-key-0123456789")
    model, request_id = ask(app, ASK_HARD)
    assert model == "strong"
    wait_until(lambda: Scrape(base).value("nanoroute_router_predicted_quality_count", model="strong") == 1)
    expected = predicted(explain(base, ASK_HARD, key="app"))["strong"]

    def paired() -> tuple[float, float, float]:
        s, labels = Scrape(base), {"policy": "triage", "model": "strong", "source": "feedback"}
        return (s.value("nanoroute_router_quality_samples_total", **labels),
                s.value("nanoroute_router_quality_predicted_total", **labels),
                s.value("nanoroute_router_quality_observed_total", **labels))

    other.post("/feedback", body={"request_id": request_id, "score": 1.0}, cast_to=object)  # not its request
    app.post("/feedback", body={"request_id": request_id, "label": "fine"}, cast_to=object)  # no score
    app.post("/feedback", body={"request_id": "never-served", "score": 1.0}, cast_to=object)
    assert paired() == (0, 0, 0)
    app.post("/feedback", body={"request_id": request_id, "score": 0.5}, cast_to=object)
    samples, predicted_sum, observed_sum = paired()
    assert (samples, observed_sum) == (1, 0.5)
    assert predicted_sum == pytest.approx(expected, abs=1e-6)
    assert Scrape(base).value("nanoroute_router_quality_samples_total", source="rollout") == 0


def test_a_rollout_comparison_meets_the_prediction_of_the_rolled_out_model(
    servers: Servers, client: Client, three_artifact: Path
) -> None:
    """The router predicts `mid` too: the rollout that mirrors the requests to it scores it."""
    rollout = ", rollout: {model: mid, shadow_sample: 1.0, min_samples: 50, window: 50}"
    mid = servers.upstream("mid", answer="shipping")  # disagrees with the strong model: scored 0
    base, folder, _, _ = start(servers, three_artifact, mid, rollout)
    assert ask(client(base), ASK_HARD)[0] == "strong"
    labels = {"policy": "triage", "model": "mid", "source": "rollout"}
    wait_until(lambda: Scrape(base).value("nanoroute_router_quality_samples_total", **labels) == 1)
    scrape = Scrape(base)
    router = load(folder)
    expected = router.predict({"messages": chat(ASK_HARD)})[router.models.index("mid")]
    assert scrape.value("nanoroute_router_quality_predicted_total", **labels) == pytest.approx(expected)
    assert scrape.value("nanoroute_router_quality_observed_total", **labels) == 0.0
    assert [s.body["messages"] for s in mid.seen] == [chat(ASK_HARD)]


def test_a_new_artifact_in_the_folder_is_picked_up_by_the_watcher(
    servers: Servers, client: Client, router_artifact: Path
) -> None:
    base, folder, _, _ = start(servers, router_artifact, reload_interval_s=0.2)
    first = explain(base, ASK_EASY)["learned"]["version"]
    config_version = httpx.get(f"{base.removesuffix('/v1')}/admin/config", headers=ADMIN).json()["version"]

    data = write(servers.tmp / "retrain.jsonl", rows(300, seed=8))  # other prompts: other weights
    train_router(data, folder)
    new = json.loads((folder / "manifest.json").read_text())["version"]
    assert new != first
    wait_until(lambda: explain(base, ASK_EASY)["learned"]["version"] == new, timeout=10)
    assert httpx.get(f"{base.removesuffix('/v1')}/admin/config", headers=ADMIN).json()["version"] != config_version
    assert ask(client(base), ASK_EASY)[0] == "cheap"
    assert ask(client(base), ASK_HARD)[0] == "strong"


def test_a_broken_artifact_is_refused_and_the_old_one_keeps_serving(
    servers: Servers, client: Client, router_artifact: Path
) -> None:
    base, folder, _, _ = start(servers, router_artifact)
    first = explain(base, ASK_EASY)["learned"]["version"]
    manifest = json.loads((folder / "manifest.json").read_text())
    # A new manifest whose weights have not arrived (a partial copy): refused as a whole.
    (folder / "manifest.json").write_text(json.dumps({**manifest, "weights_sha256": "0" * 64, "version": "next"}))
    resp = reload(base)
    assert resp.status_code == 422
    problem = f"{folder / 'weights.json'}: does not match the manifest's weights_sha256 (a partial copy?)"
    assert resp.json()["problems"] == [{"path": ROUTER_AT, "problem": problem}]
    shown = httpx.get(f"{base.removesuffix('/v1')}/admin/config", headers=ADMIN).json()
    assert shown["last_error"]["problems"] == [{"path": ROUTER_AT, "problem": problem}]
    assert explain(base, ASK_EASY)["learned"]["version"] == first
    assert ask(client(base), ASK_EASY)[0] == "cheap"
    assert ask(client(base), ASK_HARD)[0] == "strong"
    assert Scrape(base).value("nanoroute_config_reloads_total", result="error") == 1
