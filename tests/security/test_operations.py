"""Attack: read what the gateway keeps beside the API: its metrics, its captured prompts, secrets in them.

`/metrics` can be kept off the API port; capture files are readable by the gateway's user alone; and
redaction takes passwords, OAuth and AWS credentials, JWTs and private keys out of what is captured.
"""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from gateway.capture.sink import files_in
from gateway.config.redact import Redactor
from tests.api.support import CHAT, wait_until
from tests.fakes.servers import Servers, free_port


def test_metrics_can_be_served_on_the_metrics_port_only(servers: Servers) -> None:
    up = servers.upstream()
    port = free_port()
    base = servers.gateway(f"backends: {{b: {{type: openai, url: {up.url}}}}}\nmodels: {{m: {{backend: b}}}}\n",
                           metrics_port=port, metrics_on_api=False)
    assert httpx.post(f"{base}/chat/completions", json=CHAT).status_code == 200
    assert httpx.get(base.removesuffix("/v1") + "/metrics").status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200 and "nanoroute_requests_total" in scraped.text


def test_captures_are_readable_by_the_gateway_user_alone(servers: Servers, tmp_path: Path) -> None:
    up = servers.upstream()
    base = servers.gateway(f"""
backends: {{b: {{type: openai, url: {up.url}}}}}
models: {{m: {{backend: b}}}}
policies:
  - {{name: p, match: {{task: support}}, candidates: [m], capture: {{sample: 1.0}}}}
""", data_dir=tmp_path)
    headers = {"X-Nanoroute-Task": "support"}
    assert httpx.post(f"{base}/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert httpx.post(f"{base}/feedback", json={"request_id": "r", "score": 1}).status_code == 200
    folder = tmp_path / "captures" / "tasks" / "support"
    wait_until(lambda: bool(files_in(folder)))
    files = [*files_in(folder), *files_in(tmp_path / "captures" / "feedback")]
    assert len(files) == 2
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for d in (tmp_path / "captures", tmp_path / "captures" / "tasks", folder, tmp_path / "captures" / "feedback"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


@pytest.mark.parametrize(("text", "secret"), [
    ("connect with password=hunter2-correct", "hunter2-correct"),
    ("PASSWORD: 'my pass phrase'", "my pass phrase"),
    ('config {"db_password": "s3cr3t!"}', "s3cr3t!"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("temporary key ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("token ya29.a0AfH6SMBxRJ4Hq9y0T8kZ_example-token-1234", "ya29.a0AfH6SMBxRJ4Hq9y0T8kZ_example-token-1234"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXktdjEAAAAA"),
    ("db at postgres://app:pa55word@db.internal/prod", "pa55word"),
])
def test_redaction_takes_secrets_out_of_captured_text(text: str, secret: str) -> None:
    out = Redactor().text(text)
    assert secret not in out and "[REDACTED:key]" in out


def test_redaction_takes_secret_fields_out_of_captured_json() -> None:
    tool_call = {"name": "login", "arguments": {"username": "jane", "password": "hunter2", "api_key": "abc"}}
    out = Redactor().value(tool_call)
    assert out["arguments"] == {"username": "jane", "password": "[REDACTED:key]", "api_key": "[REDACTED:key]"}
