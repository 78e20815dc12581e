"""The image itself, built and run: `scripts/image.sh build` makes it from the repository's Dockerfile, and the
container is started the way the Helm chart's rendered Deployment starts it (tests/deploy/pod.py: its command,
user, fsGroup, read-only root, no privilege escalation, no capabilities, env and volumes), then a chat request
goes through it to a fake upstream on loopback, its user and HEALTHCHECK are checked, and it is stopped with
SIGTERM as the kubelet stops it. Both images: the default one, and the one built with EXTRAS=litellm.

What differs from a cluster: `buildah run --isolation chroot` shares the host's network namespace, so the
gateway listens on 127.0.0.1 on free ports instead of the Deployment's 0.0.0.0:8080 and :9090 (the only values
changed; asserted before they are); there is no pid namespace, no seccomp profile and no cgroup limit.

Marked `image` and `e2e` (`-m "not e2e"` or `-m "not image"` skips it). It needs root, or podman, buildah and
debootstrap installed; scripts/image.sh installs them with apt when missing. The first run on a machine also
makes the Debian base image (docs/deploy.md, "Building and testing the image", has the times).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import openai
import pytest

from tests.deploy.dockerfile import parse
from tests.deploy.pod import Pod, from_deployment
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream
from tests.helm.chart import CHART, render

pytestmark = [pytest.mark.image, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "scripts" / "image.sh"
MB = 1000 * 1000  # as podman and registries count

CLIENT_KEY = "sk-smoke-client-key-0123456789abcdef"
ADMIN_KEY = "sk-smoke-admin-key-0123456789abcdef"
UPSTREAM_KEY = "sk-smoke-upstream-key-0123456789"
ANTHROPIC_KEY = "sk-ant-smoke-key-0123456789"
SECRETS = {
    ("client-keys", "api-keys"): f"smoke={CLIENT_KEY}",
    ("admin-key", "admin-key"): ADMIN_KEY,
    ("provider-keys", "upstream"): UPSTREAM_KEY,
    ("provider-keys", "anthropic"): ANTHROPIC_KEY,
}


@dataclass(frozen=True)
class Image:
    name: str
    extras: str
    size: int  # bytes, as `podman images` counts them
    base: str
    base_size: int
    config: dict[str, Any] = field(repr=False)  # the Docker image config: User, Entrypoint, Cmd, Healthcheck...


def _image_sh(*args: str, timeout: float) -> str:
    done = subprocess.run(["bash", str(IMAGE_SH), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"scripts/image.sh {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


def _size(image: str) -> int:
    out = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                         text=True, check=True).stdout
    return int(out)


@pytest.fixture(scope="module", params=["", "litellm"], ids=["default", "litellm"])
def image(request: pytest.FixtureRequest) -> Iterator[Image]:
    tools = all(shutil.which(t) for t in ("buildah", "podman", "debootstrap"))
    if not tools and os.geteuid() != 0:
        message = "needs podman, buildah and debootstrap (apt-get install podman buildah debootstrap), or root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    extras: str = request.param
    base = _image_sh("base", timeout=900)  # installs the tools, makes or reuses the base
    # A tag of this run's own: another clone on the machine may be building its own at the same time.
    tag = f"localhost/nanoroute:test-{os.getpid()}{'-' + extras if extras else ''}"
    name = _image_sh("build", "--tag", tag, *([extras] if extras else []), timeout=1200)
    assert name == tag
    try:
        inspected = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True,
                                              text=True, check=True).stdout)
        yield Image(name, extras, _size(name), base, _size(base), inspected["Docker"]["config"])
    finally:
        subprocess.run(["buildah", "rmi", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _values(image: Image, upstream: FakeUpstream, anthropic: FakeAnthropic | None) -> dict[str, Any]:
    """Values as an operator writes them: the image, keys from Secrets, a config in front of the fakes."""
    repository, _, tag = image.name.rpartition(":")
    backends: dict[str, Any] = {"upstream": {"type": "openai", "url": upstream.url, "api_key_env": "UPSTREAM_API_KEY"}}
    # No price and no window: the packaged cost map gives gpt-4o-mini's (no litellm in the default image).
    models: dict[str, Any] = {"small": {"backend": "upstream", "name": "gpt-4o-mini"}}
    keys = [{"env": "UPSTREAM_API_KEY", "secretName": "provider-keys", "key": "upstream"}]
    policies: list[dict[str, Any]] = [{"name": "default", "match": {}, "strategy": "cheapest", "candidates": ["small"]}]
    if anthropic is not None:
        backends["anthropic"] = {"type": "litellm", "provider": "anthropic", "url": anthropic.url,
                                 "api_key_env": "ANTHROPIC_API_KEY"}
        models["claude"] = {"backend": "anthropic", "name": "claude-3-5-haiku-20241022"}
        keys.append({"env": "ANTHROPIC_API_KEY", "secretName": "provider-keys", "key": "anthropic"})
        policies.insert(0, {"name": "claude", "match": {"model": ["claude"]}, "candidates": ["claude"]})
    return {
        "image": {"repository": repository, "tag": tag},
        "auth": {"apiKeys": {"secretName": "client-keys"}, "adminKey": {"secretName": "admin-key"}},
        "providerKeys": keys,
        "config": {"backends": backends, "models": models, "policies": policies},
    }


def _on_loopback(pod: Pod) -> tuple[Pod, int, int]:
    """The pod with its ports moved to free ones on 127.0.0.1: the host's network namespace is shared here."""
    assert (pod.env["NANOROUTE_HOST"], pod.env["NANOROUTE_PORT"], pod.env["NANOROUTE_METRICS_PORT"]) == (
        "0.0.0.0", "8080", "9090")
    port, metrics = _free_port(), _free_port()
    env = {**pod.env, "NANOROUTE_HOST": "127.0.0.1", "NANOROUTE_PORT": str(port),
           "NANOROUTE_METRICS_PORT": str(metrics)}
    return replace(pod, env=env), port, metrics


def _gateway_process(port: int) -> int | None:
    """The gateway's PID as the host sees it (no pid namespace): `nanoroute serve` with this NANOROUTE_PORT."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith(b"/nanoroute") and argv[2] == b"serve" and (
                f"NANOROUTE_PORT={port}".encode() in environ):
            return int(proc.name)
    return None


@dataclass
class Running:
    pid: int  # the gateway's, as the host sees it
    started_s: float  # from `scripts/image.sh run` to /healthz answering
    output: str = ""
    returncode: int | None = None


def _container_left(script_pid: int) -> bool:
    names = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True,
                           text=True, check=True).stdout.split()
    return f"nanoroute-run-{script_pid}" in names


@contextmanager
def _serving(pod: Pod, port: int) -> Iterator[Running]:
    """Start the pod's container; yield once /healthz answers; on leaving, SIGTERM it (the kubelet's stop) and
    keep its output. Fails if it exits, does not answer in 90 s, or leaves its working container behind."""
    start = time.monotonic()
    proc = subprocess.Popen(pod.run_command(IMAGE_SH), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    running = Running(0, 0.0)
    try:
        while True:
            assert proc.poll() is None, f"the container exited: {proc.communicate()[0][-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - start < 90, "the container did not answer /healthz in 90 s"
            time.sleep(0.1)
        running.started_s = time.monotonic() - start
        pid = _gateway_process(port)
        assert pid is not None
        running.pid = pid
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)  # scripts/image.sh passes it to the container's process
        try:
            running.output = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            running.output = proc.communicate()[0]
        running.returncode = proc.returncode
        if _container_left(proc.pid):
            subprocess.run(["buildah", "rm", f"nanoroute-run-{proc.pid}"], capture_output=True, check=False)
            pytest.fail("scripts/image.sh run left its working container behind")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _mount_options(pid: int) -> dict[str, set[str]]:
    """Each mount point the process sees, with its per-mount options (the last mount at a path wins)."""
    out: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        out[fields[4]] = set(fields[5].split(","))
    return out


def _healthcheck(image: Image, pod: Pod) -> int:
    """The image's HEALTHCHECK command, run in a container of the pod's settings; its exit status."""
    test = image.config["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    done = subprocess.run(pod.exec_command(IMAGE_SH, test[1:]), capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode


def test_the_image_is_small(image: Image) -> None:
    added = image.size - image.base_size
    print(f"\n{image.name}: {image.size / MB:.0f} MB on {image.base} ({image.base_size / MB:.0f} MB): "
          f"{added / MB:.0f} MB of its own")
    if image.extras:
        assert added < 400 * MB  # litellm and what it pulls in; a guard against it growing unnoticed
    else:
        # At most 300 MB on python:3.11-slim-bookworm, whose own size is about 130 MB: 150 MB leaves room.
        assert added < 150 * MB
        assert image.size < 300 * MB


def test_the_image_runs_as_the_charts_deployment_runs_it(image: Image, chart: helm.Chart, servers: Servers,
                                                         tmp_path: Path) -> None:
    upstream = servers.upstream()
    anthropic = servers.anthropic() if image.extras == "litellm" else None
    rendered = render(chart, _values(image, upstream, anthropic))
    pod = from_deployment(rendered, tmp_path / "pod", SECRETS)
    assert pod.image == image.name  # the Deployment runs this very image, as it is
    assert pod.args == ["serve"] and not pod.command  # the image's ENTRYPOINT, the chart's args
    assert pod.read_only_root and pod.no_new_privileges and pod.drop_all_capabilities
    assert {path: ro for _, path, ro in pod.mounts} == {"/etc/nanoroute": True, "/var/lib/nanoroute": False,
                                                        "/tmp": False}
    pod, port, metrics_port = _on_loopback(pod)
    healthcheck = parse(REPO / "Dockerfile").stage("runtime").last("HEALTHCHECK")
    assert json.loads(healthcheck.args.split(" CMD ", 1)[1]) == image.config["Healthcheck"]["Test"][1:]

    with _serving(pod, port) as running:
        status = _status(running.pid)
        uid, gid = pod.user
        assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4
        assert uid != 0 and image.config["User"] == f"{uid}:{gid}"  # the chart's user is the image's
        assert str(pod.fs_group) in status["Groups"].split()
        assert (status["CapEff"], status["CapBnd"], status["NoNewPrivs"]) == ("0" * 16, "0" * 16, "1")
        mounts = _mount_options(running.pid)
        assert "ro" in mounts["/"] and "ro" in mounts["/etc/nanoroute"]
        assert "rw" in mounts["/tmp"] and "rw" in mounts["/var/lib/nanoroute"]

        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=client.base_url, api_key="sk-wrong-key-0123456789abcdef",
                          max_retries=0).models.list()
        reply = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == upstream.answer
        assert upstream.served[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # from the Secret
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        small = httpx.get(f"http://127.0.0.1:{port}/admin/config", headers=admin, timeout=5).json()["models"]["small"]
        assert (small["price_source"], small["price_per_1m"], small["context_window"]) == (
            "cost_map", {"input": pytest.approx(0.15), "output": pytest.approx(0.6)}, 128000)
        explained = httpx.post(f"http://127.0.0.1:{port}/admin/explain", headers=admin, timeout=5,
                               json={"model": "small", "messages": [{"role": "user", "content": "tiktoken is great!"}]})
        assert explained.json()["prompt_tokens"] == 6 + 4  # cl100k_base's count, not characters / 4 (5 + 4)
        if anthropic is not None:
            reply = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=20)
            assert reply.choices[0].message.content == "Hello from the fake Anthropic."
            assert anthropic.seen[-1][0]["x-api-key"] == ANTHROPIC_KEY
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200 and 'nanoroute_requests_total{' in metrics.text
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404  # onApiPort: false
        assert _healthcheck(image, pod) == 0
        rss_mb = int(_status(running.pid)["VmRSS"].split()[0]) / 1024
        print(f"\n{image.name}: /healthz after {running.started_s:.1f} s, {rss_mb:.0f} MiB resident after a request")

    assert "Application shutdown complete" in running.output, running.output[-3000:]
    assert _gateway_process(port) is None
    assert _healthcheck(image, pod) != 0  # nothing answers now


def test_a_litellm_backend_needs_the_litellm_image(image: Image, chart: helm.Chart, servers: Servers,
                                                   tmp_path: Path) -> None:
    rendered = render(chart, _values(image, servers.upstream(), servers.anthropic()))
    pod, port, _ = _on_loopback(from_deployment(rendered, tmp_path / "pod", SECRETS))
    config = pod.env["NANOROUTE_CONFIG"]
    checked = subprocess.run(pod.run_command(IMAGE_SH, ["check", config]), capture_output=True, text=True,
                             timeout=120, check=False)
    if image.extras == "litellm":
        assert checked.returncode == 0, checked.stdout + checked.stderr
        return
    # The default image: `nanoroute check` and the start both fail, naming the backend and the image to use.
    said = checked.stdout + checked.stderr
    assert checked.returncode == 1, said
    assert "backends.anthropic.type" in said and "EXTRAS=litellm" in said
    served = subprocess.run(pod.run_command(IMAGE_SH), capture_output=True, text=True, timeout=120, check=False)
    assert served.returncode != 0 and "nanoroute[litellm]" in served.stdout + served.stderr
    assert _gateway_process(port) is None
