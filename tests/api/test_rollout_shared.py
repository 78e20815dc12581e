"""One rollout for every gateway that shares a store, through the official SDK: two gateways ("pods") on one
SQLite file, or on one real redis-server. Scores recorded through one move the rollout for the other; an
operator's action on one applies to both; a config's stage, reloaded by both, moves it once; a store that is
down leaves the requests served and each gateway's rollout moving on its own, until it is back."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.api.support import Client, wait_until
from tests.api.test_rollout import ADMIN, ADMIN_KEY, ask, config, drive, rollout
from tests.fakes.redis import RedisServer
from tests.fakes.servers import Servers

FOLLOW_S = 2.5
"""How soon the other gateway follows: its copy is read back from the store every second (`sync_s`)."""


def two_gateways(servers: Servers, text: str, **store: object) -> tuple[str, str]:
    """Two gateways on `text` sharing the store `store` describes; their roots (without /v1)."""
    return (servers.gateway(text, admin_key=ADMIN_KEY, **store).removesuffix("/v1"),
            servers.gateway(text, admin_key=ADMIN_KEY, **store).removesuffix("/v1"))


def act(root: str, **body: object) -> dict[str, object]:
    resp = httpx.post(f"{root}/admin/rollouts/triage", headers=ADMIN, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def transitions(root: str, stage: str) -> float:
    """This gateway's count of moves into `stage` (the moves it made itself)."""
    prefix = f'nanoroute_rollout_transitions_total{{model="small",policy="triage",stage="{stage}"}} '
    lines = [line for line in httpx.get(f"{root}/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def test_scores_recorded_through_one_gateway_move_the_rollout_for_the_other(servers: Servers, client: Client,
                                                                            tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    a, b = two_gateways(servers, config(teacher, student), data_dir=tmp_path)
    assert rollout(b)["stage"] == "shadow" and rollout(b)["shared"] is True

    drive(client, f"{a}/v1", a, "canary")
    drive(client, f"{a}/v1", a, "primary")
    wait_until(lambda: rollout(b)["stage"] == "primary", FOLLOW_S)
    assert all(ask(client, f"{b}/v1") == "small" for _ in range(3))  # B routes by the stage A's scores reached
    assert [h["to"] for h in rollout(b)["history"]] == ["canary[0]", "primary"] == [
        h["to"] for h in rollout(a)["history"]]
    # A made the moves: logged and counted there; B follows them, and shows the stage.
    assert (transitions(a, "primary"), transitions(b, "primary")) == (1.0, 0.0)
    assert 'nanoroute_rollout_stage{model="small",policy="triage",stage="primary"} 1.0' in httpx.get(
        f"{b}/metrics").text


def test_an_operators_pin_and_stop_on_one_gateway_apply_on_the_other(servers: Servers, client: Client,
                                                                      tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    a, b = two_gateways(servers, config(teacher, student), data_dir=tmp_path)

    pinned = act(b, action="pin", stage="primary")
    assert (pinned["stage"], pinned["auto"], pinned["shared"]) == ("primary", False, True)
    wait_until(lambda: (rollout(a)["stage"], rollout(a)["auto"]) == ("primary", False), FOLLOW_S)
    assert ask(client, f"{a}/v1") == "small"

    act(b, action="stop")
    wait_until(lambda: rollout(a)["stage"] == "stopped", FOLLOW_S)
    mirrored = len(student.seen)
    assert ask(client, f"{a}/v1") == "large"
    assert len(student.seen) == mirrored  # A mirrors nothing either
    assert [h["why"] for h in rollout(a)["history"]] == ["pinned by an operator", "stopped by an operator"]
    assert (transitions(b, "stopped"), transitions(a, "stopped")) == (1.0, 0.0)


def test_a_stage_set_in_the_config_and_reloaded_by_both_moves_the_rollout_once(servers: Servers,
                                                                               tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    text = config(teacher, student)
    a, b = two_gateways(servers, text, data_dir=tmp_path)
    changed = text.replace("canary_steps: [0.5]}", "canary_steps: [0.5], stage: primary, auto: false}")
    assert changed != text
    for i, root in enumerate((a, b)):
        (tmp_path / f"config-{i}.yaml").write_text(changed)  # each gateway's config file (Servers.gateway)
        assert httpx.post(f"{root}/admin/reload", headers=ADMIN).status_code == 200

    def settled() -> bool:
        ra, rb = rollout(a), rollout(b)
        return ra["stage"] == rb["stage"] == "primary" and ra["history"] == rb["history"]

    wait_until(settled, FOLLOW_S)
    for root in (a, b):
        state = rollout(root)
        assert [h["why"] for h in state["history"]] == ["set by the config"]
        assert (state["auto"], state["shared"]) == (False, True)
    assert transitions(a, "primary") + transitions(b, "primary") == 1.0

    again = changed.replace("stage: primary", "max_concurrency: 3, stage: primary")
    for i, root in enumerate((a, b)):  # a reload that changes neither stage nor auto moves nothing
        (tmp_path / f"config-{i}.yaml").write_text(again)
        assert httpx.post(f"{root}/admin/reload", headers=ADMIN).status_code == 200
    time.sleep(FOLLOW_S)  # what either wrote, the other has read by now
    assert len(rollout(a)["history"]) == len(rollout(b)["history"]) == 1


def test_an_operators_stop_on_one_replica_applies_on_the_other_through_redis(
        servers: Servers, client: Client, redis_server: RedisServer, tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    a = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, redis_url=redis_server.url,
                        data_dir=tmp_path / "a").removesuffix("/v1")
    b = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, redis_url=redis_server.url,
                        data_dir=tmp_path / "b").removesuffix("/v1")

    assert act(a, action="stop")["stage"] == "stopped"
    wait_until(lambda: rollout(b)["stage"] == "stopped", FOLLOW_S)
    assert ask(client, f"{b}/v1") == "large"
    act(b, action="resume")
    wait_until(lambda: (rollout(a)["stage"], rollout(a)["auto"]) == ("shadow", True), FOLLOW_S)
    with redis.Redis.from_url(redis_server.url) as server:
        stored = json.loads(server.get("nanoroute:rollouts:triage"))
    assert (stored["model"], stored["stage"], [h["to"] for h in stored["history"]]) == (
        "small", "shadow", ["stopped", "shadow"])
    assert not (tmp_path / "a" / "state.db").exists()  # what they share is Redis


def test_a_store_that_is_down_leaves_each_gateway_its_own_rollout_until_it_is_back(
        servers: Servers, client: Client, redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    a = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, redis_url=redis_server.url,
                        data_dir=tmp_path / "a").removesuffix("/v1")
    b = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, redis_url=redis_server.url,
                        data_dir=tmp_path / "b").removesuffix("/v1")
    redis_server.kill()

    drive(client, f"{a}/v1", a, "canary")  # served, scored and moved, in A alone
    wait_until(lambda: rollout(a)["shared"] is False and rollout(b)["shared"] is False, FOLLOW_S)
    assert rollout(b)["stage"] == "shadow"
    assert transitions(a, "canary") == 1.0  # A's move, in A alone: logged and counted there
    with caplog.at_level(logging.ERROR, "nanoroute"):
        caplog.clear()
        pinned = act(b, action="pin", stage="primary")  # holds in B at once, and is kept for the store
        assert (pinned["stage"], pinned["shared"]) == ("primary", False)
        assert ask(client, f"{b}/v1") == "small"
        time.sleep(FOLLOW_S)  # each tries the store again every second...
    assert not [r for r in caplog.records if r.getMessage().startswith("rollouts: ")]  # ... and says so once a minute

    redis_server.start()
    # Back: its state wins (A's scores made meanwhile are not written), with B's pin written to it.
    wait_until(lambda: [(r["stage"], r["auto"], r["shared"]) for r in (rollout(a), rollout(b))] == [
        ("primary", False, True)] * 2, 5.0)
    assert ask(client, f"{a}/v1") == "small"
    assert [h["why"] for h in rollout(a)["history"]] == ["pinned by an operator"]
