"""`nanoroute keys ...` and `nanoroute spend` (gateway/governance/cli.py) against a running gateway's admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.cli import main
from tests.api.support import MESSAGES, Client, wait_until
from tests.api.test_keys_admin import ADMIN, COST, start
from tests.fakes.servers import Servers, free_port

NANOROUTE = Path(sys.executable).parent / "nanoroute"


class Cli:
    """`nanoroute` in this process, against one gateway: (exit code, stdout, stderr) of each command."""

    def __init__(self, root: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        where = [] if "--url" in argv else ["--url", self.root]
        code = main([*argv, *where])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> dict[str, Any]:
        code, out, err = self(*argv)
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data


@pytest.fixture
def cli(servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("NANOROUTE_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("NANOROUTE_URL", raising=False)
    return Cli(start(servers, tmp_path), capsys)


def answer(client: Client, cli: Cli, key: str, model: str = "small") -> str:
    reply = client(f"{cli.root}/v1", api_key=key).chat.completions.create(model=model, messages=MESSAGES)
    return str(reply.choices[0].message.content)


def test_create_list_show_update_and_revoke(cli: Cli, client: Client) -> None:
    code, out, err = cli("keys", "create", "--name", "cli-key", "--team", "research", "--models", "small,big",
                         "--rpm", "5", "--budget-usd", "2", "--budget-period", "day",
                         "--metadata", "owner=ada", "--metadata", "env=dev=1")
    assert code == 0, err
    made = json.loads(out)
    assert "shown only this once" in err
    assert made["key"].startswith("sk-nr-")
    assert (made["name"], made["team"], made["models"]) == ("cli-key", "research", ["small", "big"])
    assert made["limits"] == {"rpm": 5, "tpm": None, "max_in_flight": None}
    assert made["budget"] == {"usd": 2, "period": "day"}
    assert made["metadata"] == {"owner": "ada", "env": "dev=1"}
    assert answer(client, cli, made["key"]) == "Hello from the fake upstream."

    code, out, _ = cli("keys", "list")
    assert code == 0
    assert made["key"] not in out
    assert [(k["id"], k["source"]) for k in json.loads(out)["data"]] == [("ops", "env"), (made["id"], "admin")]

    shown = cli.json("keys", "show", made["id"])
    assert [u["scope"] for u in shown["usage"]] == [f"key:{made['id']}", "team:research"]

    changed = cli.json("keys", "update", made["id"], "--tpm", "1000", "--models", "big", "--clear", "budget")
    assert changed["limits"] == {"rpm": 5, "tpm": 1000, "max_in_flight": None}  # --rpm kept
    assert (changed["models"], changed["budget"], changed["team"]) == (["big"], None, "research")
    with pytest.raises(openai.PermissionDeniedError):
        answer(client, cli, made["key"])
    assert answer(client, cli, made["key"], model="big") == "Hello from the fake upstream."

    changed = cli.json("keys", "update", made["id"], "--clear", "rpm", "--clear", "team", "--budget-usd", "3")
    assert changed["limits"] == {"rpm": None, "tpm": 1000, "max_in_flight": None}
    assert (changed["team"], changed["budget"]) == (None, {"usd": 3, "period": "month"})
    changed = cli.json("keys", "update", made["id"], "--budget-period", "total", "--name", "renamed")
    assert (changed["name"], changed["budget"]) == ("renamed", {"usd": 3, "period": "total"})

    revoked = cli.json("keys", "revoke", made["id"])
    assert revoked["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        answer(client, cli, made["key"])
    assert [k["id"] for k in cli.json("keys", "list")["data"]] == ["ops"]
    assert [k["id"] for k in cli.json("keys", "list", "--revoked")["data"]] == ["ops", made["id"]]
    code, out, err = cli("keys", "update", made["id"], "--rpm", "1")
    assert (code, out) == (1, "")
    assert err == f"error: 404: No live key with id '{made['id']}'\n"


def test_the_gateways_refusals_exit_1_with_its_message(cli: Cli) -> None:
    code, out, err = cli("keys", "create", "--name", "x", "--team", "nope")
    assert (code, out) == (1, "")
    assert err == "error: 400: No team 'nope' in the config's teams\n"
    code, _, err = cli("keys", "revoke", "ops")
    assert code == 1
    assert "403: The key 'ops' is declared in NANOROUTE_API_KEYS" in err
    code, _, err = cli("keys", "show", "nobody")
    assert (code, err) == (1, "error: 404: No key with id 'nobody'\n")
    code, _, err = cli("keys", "create", "--name", "x", "--expires-at", "tomorrow")
    assert code == 1 and "expires_at" in err
    code, _, err = cli("spend", "--group-by", "colour")
    assert code == 1 and "group_by" in err


def test_mistakes_of_the_command_line_exit_2(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made = cli.json("keys", "create", "--name", "plain")
    code, _, err = cli("keys", "update", made["id"], "--rpm", "3", "--clear", "rpm")
    assert code == 2 and "--clear rpm and a new value" in err
    code, _, err = cli("keys", "update", made["id"])
    assert code == 2 and "nothing to change" in err
    code, _, err = cli("keys", "update", made["id"], "--budget-period", "day")
    assert code == 2 and "--budget-usd" in err
    code, _, err = cli("keys", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the gateway at http://127.0.0.1:" in err

    monkeypatch.delenv("NANOROUTE_ADMIN_KEY")
    code, _, err = cli("keys", "list")
    assert (code, err) == (2, "error: no admin key: set NANOROUTE_ADMIN_KEY or give --admin-key-file\n")
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN + "\n")
    assert [k["id"] for k in cli.json("keys", "list", "--admin-key-file", str(key_file))["data"]] == ["ops",
                                                                                                     made["id"]]
    key_file.write_text("adm-wrong-0123456789")
    code, _, err = cli("keys", "list", "--admin-key-file", str(key_file))
    assert code == 1 and "401: Admin endpoints need" in err
    code, _, err = cli("keys", "list", "--admin-key-file", str(tmp_path / "missing"))
    assert code == 2 and "cannot read --admin-key-file" in err


def test_spend_prints_a_table_or_json(cli: Cli, client: Client) -> None:
    made = cli.json("keys", "create", "--name", "spender")
    for model in ("small", "small", "big"):
        answer(client, cli, made["key"], model)
    wait_until(lambda: cli.json("spend", "--json")["total"]["requests"] == 3)

    code, out, err = cli("spend", "--group-by", "key,model")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("spend ") and lines[0].endswith(" (UTC)")
    assert lines[1].split() == ["key", "name", "model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
    assert lines[2].split() == [made["id"], "spender", "small", "2", "14", "10", f"{2 * COST:.6f}"]
    assert lines[3].split() == [made["id"], "spender", "big", "1", "7", "5", f"{COST:.6f}"]
    assert lines[4].split() == ["TOTAL", "3", "21", "15", f"{3 * COST:.6f}"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned: every row as wide as the header

    data = cli.json("spend", "--group-by", "model", "--json")
    assert [(r["model"], r["requests"]) for r in data["data"]] == [("small", 2), ("big", 1)]
    assert data["total"]["cost_usd"] == pytest.approx(3 * COST)
    assert cli.json("spend", "--json", "--since", "2001-01-01", "--until", "2001-01-31")["data"] == []


def test_the_installed_command_runs_it(cli: Cli) -> None:
    env = {**os.environ, "NANOROUTE_ADMIN_KEY": ADMIN, "NANOROUTE_URL": cli.root}
    done = subprocess.run([str(NANOROUTE), "keys", "list"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert [k["id"] for k in json.loads(done.stdout)["data"]] == ["ops"]
