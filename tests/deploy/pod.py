"""The gateway container of the chart's rendered Deployment, as `scripts/image.sh run` options.

Each field the kubelet would apply becomes the option that applies it here: `command`/`args` (replacing the
image's ENTRYPOINT/CMD), runAsUser/runAsGroup and fsGroup (pod level, then the container's own), the
container's readOnlyRootFilesystem, allowPrivilegeEscalation and dropped capabilities, `env` (values, keys of
Secrets that the test supplies, the pod's name), and each volumeMount: a ConfigMap written into a folder, an
emptyDir as an empty folder that the fsGroup may write (mode 2777, group fsGroup, as the kubelet makes it),
each bound at its mountPath, read-only where the mount says so. Anything else fails loudly rather than being
dropped, so a new field in the chart shows up here first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helm.chart import Rendered, container

Obj = dict[str, Any]
POD_NAME = "test-nanoroute-0"


@dataclass
class Pod:
    image: str
    command: list[str]
    args: list[str]
    user: tuple[int, int]
    fs_group: int | None
    read_only_root: bool
    no_new_privileges: bool
    drop_all_capabilities: bool
    env: dict[str, str]
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)  # (folder here, mountPath, read-only)

    def run_options(self) -> list[str]:
        """The options of `scripts/image.sh run` that reproduce this container, but for its command."""
        uid, gid = self.user
        options = ["--user", f"{uid}:{gid}"]
        if self.fs_group is not None:
            options += ["--group-add", str(self.fs_group)]
        options += ["--read-only"] if self.read_only_root else []
        options += ["--no-new-privileges"] if self.no_new_privileges else []
        options += ["--cap-drop", "ALL"] if self.drop_all_capabilities else []
        for name, value in self.env.items():
            options += ["--env", f"{name}={value}"]
        for folder, path, read_only in self.mounts:
            options += ["--volume", f"{folder}:{path}{':ro' if read_only else ''}"]
        return options

    def run_command(self, script: Path, args: list[str] | None = None) -> list[str]:
        """`bash scripts/image.sh run ...` for this container: its command (else the image's ENTRYPOINT) with
        its args (else the image's CMD), or with `args` instead of its own (`check FILE`, say)."""
        entry = ["--entrypoint", self.command[0]] if self.command else []
        words = [*self.command[1:], *(self.args if args is None else args)]
        return ["bash", str(script), "run", *self.run_options(), *entry, self.image, "--", *words]

    def exec_command(self, script: Path, argv: list[str]) -> list[str]:
        """`argv` run in another container of this pod's image and settings, as a HEALTHCHECK or an exec probe
        runs in the container (its own network namespace is the host's here, as the gateway's is)."""
        return ["bash", str(script), "run", *self.run_options(), "--entrypoint", argv[0], self.image, "--", *argv[1:]]


def _security(deployment: Obj) -> tuple[Obj, Obj]:
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec.get("securityContext", {}), container(deployment).get("securityContext", {})


def _env(deployment: Obj, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    gateway = container(deployment)
    assert not gateway.get("envFrom"), "envFrom is not reproduced here"
    env: dict[str, str] = {}
    for entry in gateway.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = str(entry["value"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]  # a Secret the pod needs must exist
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = POD_NAME
        else:
            raise AssertionError(f"env {entry['name']}: {source} is not reproduced here")
    return env


def _mounts(rendered: Rendered, root: Path, fs_group: int | None) -> list[tuple[Path, str, bool]]:
    deployment = rendered.gateway
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts: list[tuple[Path, str, bool]] = []
    for mount in container(deployment)["volumeMounts"]:
        assert "subPath" not in mount and "subPathExpr" not in mount, f"{mount['name']}: subPath is not reproduced"
        volume = volumes[mount["name"]]
        folder = root / mount["name"]
        folder.mkdir(parents=True)
        if "configMap" in volume:
            for key, text in rendered.one("ConfigMap", volume["configMap"]["name"])["data"].items():
                (folder / key).write_text(text)
            folder.chmod(0o755)
        elif "emptyDir" in volume:
            os.chown(folder, -1, fs_group if fs_group is not None else -1)
            folder.chmod(0o2777)
        else:
            raise AssertionError(f"volume {mount['name']}: {sorted(volume)} is not reproduced here")
        mounts.append((folder, mount["mountPath"], bool(mount.get("readOnly"))))
    return mounts


def from_deployment(rendered: Rendered, root: Path, secrets: dict[tuple[str, str], str]) -> Pod:
    """The gateway container of `rendered`, its volumes laid out under `root`."""
    deployment = rendered.gateway
    gateway = container(deployment)
    pod_security, security = _security(deployment)
    merged = {**pod_security, **security}  # the container's own settings win, as in Kubernetes
    assert merged.get("runAsNonRoot") is True
    fs_group = pod_security.get("fsGroup")
    return Pod(
        image=gateway["image"],
        command=list(gateway.get("command", [])),
        args=list(gateway.get("args", [])),
        user=(int(merged["runAsUser"]), int(merged["runAsGroup"])),
        fs_group=fs_group,
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        drop_all_capabilities="ALL" in security.get("capabilities", {}).get("drop", []),
        env=_env(deployment, secrets),
        mounts=_mounts(rendered, root, fs_group),
    )
