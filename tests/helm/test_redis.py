"""The bundled Redis (redis.bundled): one replica with its append-only file on a volume, that the gateway's
replicas share, so that keys, budgets and rate limits hold across them."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.helm.chart import CHART, NAMESPACE, RELEASE, Obj, Rendered, container, env_of, load_values, render

REDIS = f"{RELEASE}-nanoroute-redis"
PASSWORD_SECRET = {"secretKeyRef": {"name": "nanoroute-redis", "key": "redis-password"}}


@pytest.fixture
def rendered(chart: helm.Chart) -> Rendered:
    """ci/redis-values.yaml: bundled with a password and a claim, the HPA, NetworkPolicies."""
    return render(chart, load_values(CHART / "ci" / "redis-values.yaml"))


def bundled(chart: helm.Chart, **values: Any) -> Rendered:
    return render(chart, {"redis": {"bundled": {"enabled": True, **values}}})


def pod(workload: Obj) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def flags(args: list[str]) -> dict[str, str]:
    """redis-server's `--name value` pairs."""
    assert args[0] == "redis-server"
    assert all(a.startswith("--") for a in args[1::2]), args
    return dict(zip(args[1::2], args[2::2], strict=True))


def test_off_by_default(chart: helm.Chart) -> None:
    rendered = render(chart)
    assert [o["metadata"]["name"] for o in rendered.objects if "redis" in o["metadata"]["name"]] == []
    assert "NANOROUTE_REDIS_URL" not in env_of(rendered.gateway)


def test_one_redis_with_an_append_only_file_flushed_every_second(rendered: Rendered) -> None:
    statefulset = rendered.one("StatefulSet", REDIS)
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == REDIS
    redis = container(statefulset)
    assert re.fullmatch(r"docker\.io/library/redis:7\.\d+\.\d+", redis["image"])  # a pinned 7.x
    args = flags(redis["args"])
    assert (args["--appendonly"], args["--appendfsync"], args["--dir"]) == ("yes", "everysec", "/data")
    assert args["--maxmemory-policy"] == "noeviction"  # keys and counters are never evicted to make room
    assert args["--maxmemory"] == "200mb"
    assert args["--port"] == "6379"
    assert args["--protected-mode"] == "no"  # else it refuses the gateway when there is no password
    assert redis["ports"] == [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}]
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_the_data_is_on_a_claim_of_its_own(rendered: Rendered) -> None:
    statefulset = rendered.one("StatefulSet", REDIS)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                             "resources": {"requests": {"storage": "2Gi"}}}
    assert "volumes" not in pod(statefulset)
    assert f"PersistentVolumeClaim data-{REDIS}-0 (2Gi)" in rendered.notes


@pytest.mark.parametrize(("storage_class", "expected"), [("", None), ("-", ""), ("fast-ssd", "fast-ssd")])
def test_the_storage_class_is_the_clusters_default_none_or_the_one_named(
        chart: helm.Chart, storage_class: str, expected: str | None) -> None:
    statefulset = bundled(chart, persistence={"storageClass": storage_class}).one("StatefulSet", REDIS)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"].get("storageClassName") == expected
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}


def test_without_persistence_the_data_is_an_empty_dir_and_notes_warn(chart: helm.Chart) -> None:
    rendered = bundled(chart, persistence={"enabled": False, "size": "512Mi"})
    statefulset = rendered.one("StatefulSet", REDIS)
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert pod(statefulset)["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "512Mi"}}]  # capped
    assert "WARNING: redis.bundled.persistence.enabled is false" in rendered.notes
    for version in ("1.27.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(statefulset, version, strict=True)


def test_the_service_reaches_the_redis_pod_and_no_other(rendered: Rendered) -> None:
    service = rendered.one("Service", REDIS)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]
    selector = service["spec"]["selector"].items()
    assert selector <= rendered.one("StatefulSet", REDIS)["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= rendered.gateway["spec"]["template"]["metadata"]["labels"].items()


def test_the_gateway_reaches_the_bundled_service(chart: helm.Chart) -> None:
    rendered = bundled(chart)
    service = rendered.one("Service", REDIS)
    url = f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    assert env_of(rendered.gateway)["NANOROUTE_REDIS_URL"] == {"value": url}
    assert "REDIS_PASSWORD" not in env_of(rendered.gateway)
    redis = container(rendered.one("StatefulSet", REDIS))
    assert "--requirepass" not in redis["args"]
    assert "env" not in redis


def test_with_a_password_both_sides_read_it_from_the_secret(rendered: Rendered) -> None:
    env = container(rendered.gateway)["env"]
    names = [e["name"] for e in env]
    # Kubernetes expands $(REDIS_PASSWORD) only from variables named before.
    assert names.index("REDIS_PASSWORD") < names.index("NANOROUTE_REDIS_URL")
    gateway = env_of(rendered.gateway)
    assert gateway["REDIS_PASSWORD"] == PASSWORD_SECRET
    assert gateway["NANOROUTE_REDIS_URL"] == {"value": f"redis://:$(REDIS_PASSWORD)@{REDIS}:6379/0"}
    redis = rendered.one("StatefulSet", REDIS)
    assert flags(container(redis)["args"])["--requirepass"] == "$(REDIS_PASSWORD)"
    assert env_of(redis) == {"REDIS_PASSWORD": PASSWORD_SECRET, "REDISCLI_AUTH": PASSWORD_SECRET}  # the probes'
    assert "nanoroute-redis (key redis-password)" in rendered.notes


@pytest.fixture
def fake_redis_cli(tmp_path: Path) -> Path:
    """A `redis-cli` that prints $REPLY (stdout) or $FAILURE (stderr, exit 1), and records its arguments."""
    script = tmp_path / "redis-cli"
    script.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
                      'if [ -n "$FAILURE" ]; then echo "$FAILURE" >&2; exit 1; fi\necho "$REPLY"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


@pytest.mark.parametrize(("reply", "failure", "alive", "ready"), [
    ("PONG", "", True, True),
    ("LOADING Redis is loading the dataset in memory", "", True, False),
    ("NOAUTH Authentication required.", "", False, False),
    ("", "Could not connect to Redis at 127.0.0.1:6379: Connection refused", False, False),
])
def test_the_probes_ping_redis_and_let_it_load_its_data(rendered: Rendered, fake_redis_cli: Path, reply: str,
                                                        failure: str, alive: bool, ready: bool) -> None:
    redis = container(rendered.one("StatefulSet", REDIS))
    env = {"PATH": f"{fake_redis_cli}{os.pathsep}{os.environ['PATH']}", "REPLY": reply, "FAILURE": failure}
    for probe, expected in (("livenessProbe", alive), ("readinessProbe", ready)):
        command = redis[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10, check=False)
        assert (result.returncode == 0) is expected, (probe, result)
        assert (fake_redis_cli / "args").read_text().split() == ["-h", "127.0.0.1", "-p", "6379", "ping"]


def test_redis_runs_as_its_images_user_with_a_read_only_root(rendered: Rendered) -> None:
    statefulset = rendered.one("StatefulSet", REDIS)
    security = pod(statefulset)["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (999, 999, 999)
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    redis = container(statefulset)
    assert redis["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
    assert [m["mountPath"] for m in redis["volumeMounts"]] == ["/data"]  # the one place it writes
    assert pod(statefulset)["automountServiceAccountToken"] is False
    assert redis["resources"]["limits"]["memory"] == "512Mi"


def test_only_the_gateways_pods_reach_redis(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy", REDIS)
    redis_labels = rendered.one("StatefulSet", REDIS)["spec"]["template"]["metadata"]["labels"].items()
    gateway_labels = rendered.gateway["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels
    assert not peer["podSelector"]["matchLabels"].items() <= redis_labels


def test_without_network_policies_or_a_password_notes_warn(chart: helm.Chart) -> None:
    rendered = bundled(chart)
    assert [p["metadata"]["name"] for p in rendered.all("NetworkPolicy")] == []
    assert "WARNING: the bundled Redis has no password" in rendered.notes
    guarded = [bundled(chart, auth={"existingSecret": "nanoroute-redis"}),
               render(chart, {"redis": {"bundled": {"enabled": True}}, "networkPolicy": {"enabled": True}})]
    for each in guarded:
        assert "the bundled Redis has no password" not in each.notes


@pytest.mark.parametrize(("values", "warned"), [
    ({"hpa": {"enabled": True}}, True),
    ({"hpa": {"enabled": True}, "redis": {"url": "redis://redis.shared:6379/0"}}, False),
    ({"hpa": {"enabled": True}, "redis": {"existingSecret": "nanoroute-redis"}}, False),
    ({"hpa": {"enabled": True}, "redis": {"bundled": {"enabled": True}}}, False),
    ({}, False),
])
def test_notes_warn_that_an_autoscaled_gateway_without_redis_limits_per_pod(
        chart: helm.Chart, values: dict[str, Any], warned: bool) -> None:
    notes = render(chart, values).notes
    assert ("budgets and rate\nlimits are counted per pod (a client gets up to 10 times its limit)" in notes) is warned


def test_extra_args_and_no_memory_cap(chart: helm.Chart) -> None:
    redis = container(bundled(chart, maxmemory="", extraArgs=["--save", ""]).one("StatefulSet", REDIS))
    assert "--maxmemory" not in redis["args"]
    assert redis["args"][-2:] == ["--save", ""]  # RDB snapshots off; the append-only file stays
    assert flags(redis["args"])["--appendonly"] == "yes"


def test_the_redis_objects_are_named_after_the_release(chart: helm.Chart) -> None:
    rendered = render(chart, {"redis": {"bundled": {"enabled": True}}, "networkPolicy": {"enabled": True}})
    objects = [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in rendered.objects
               if o["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"]
    assert sorted(objects) == [("NetworkPolicy", REDIS, NAMESPACE), ("Service", REDIS, NAMESPACE),
                               ("StatefulSet", REDIS, NAMESPACE)]
