#!/usr/bin/env python3
"""Write the two data files the gateway takes from litellm's wheel, so that it needs no litellm to read them.

usage: python scripts/litellm_data.py

    gateway/config/costmap.json          litellm's cost map trimmed to what gateway/config/costmap.py reads
                                         (four fields per model: 0.5 MB of its 3.4 MB), one model per line
    gateway/routing/cl100k_base.tiktoken tiktoken's cl100k_base encoding (1.7 MB), which litellm bundles so
                                         that tiktoken fetches nothing; checked against tiktoken's own sha256

Both come from the litellm wheel that requirements/runtime-litellm.lock pins, downloaded with pip and
checked against the lock's sha256 before it is opened. scripts/lock.py runs this after writing the locks,
so a refresh that moves litellm moves the prices with it: review them in the diff like the pins.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.config import costmap  # noqa: E402  (the repository's, not an installed one)
from gateway.routing import tokens  # noqa: E402

LOCK = REPO / "requirements" / "runtime-litellm.lock"
COST_MAP = f"litellm/{costmap.SOURCE}"
# tiktoken's cache name for the encoding's URL (the SHA-1 of
# https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken), where litellm keeps the file.
CL100K = "litellm/litellm_core_utils/tokenizers/9b5ad71b2ce5302211f9c61530b329a4922fc6a4"


def locked_litellm() -> str:
    """litellm's pin in the lock with its hashes, as one requirement line for `pip --require-hashes`."""
    if not LOCK.exists():
        sys.exit(f"scripts/litellm_data.py: no {LOCK.relative_to(REPO)}: python scripts/lock.py --extra litellm")
    found = re.search(r"^litellm==\S+(?: ;[^\\\n]*)?(?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+", LOCK.read_text(), re.M)
    if found is None:
        sys.exit(f"scripts/litellm_data.py: {LOCK.relative_to(REPO)} pins no litellm")
    return found[0].replace("\\\n", " ")


def download(requirement: str, folder: Path) -> Path:
    spec = folder / "litellm.txt"
    spec.write_text(requirement + "\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--only-binary", ":all:", "--require-hashes", "--requirement", str(spec), "--dest", str(folder)],
                   check=True)
    [wheel] = folder.glob("litellm-*.whl")
    return wheel


def cost_map_text(raw: bytes, version: str) -> str:
    """The trimmed map, its source first, then one model per line (a refresh's diff names each price that moved)."""
    source = {"package": "litellm", "version": version, "file": COST_MAP, "sha256": hashlib.sha256(raw).hexdigest()}
    models = costmap.trim(json.loads(raw))
    lines = [f"{json.dumps(name)}: {json.dumps(entry, sort_keys=True)}" for name, entry in models.items()]
    return '{"source": ' + json.dumps(source) + ',\n"models": {\n' + ",\n".join(lines) + "\n}}\n"


def main() -> None:
    requirement = locked_litellm()
    version = requirement.split()[0].removeprefix("litellm==")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(download(requirement, Path(tmp))) as wheel:
        raw_map, cl100k = wheel.read(COST_MAP), wheel.read(CL100K)
    if hashlib.sha256(cl100k).hexdigest() != tokens.CL100K_SHA256:
        sys.exit(f"scripts/litellm_data.py: litellm {version}'s {CL100K} is not tiktoken's cl100k_base")
    costmap.PATH.write_text(cost_map_text(raw_map, version))
    tokens.CL100K_PATH.write_bytes(cl100k)
    for path in (costmap.PATH, tokens.CL100K_PATH):
        print(f"wrote {path.relative_to(REPO)} (from litellm {version})")


if __name__ == "__main__":
    main()
