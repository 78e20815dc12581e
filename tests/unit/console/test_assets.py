"""The console's files: the vendored ones match their pins and carry their licenses, the wheel ships them all,
and no template holds a script, a style or an event handler inline (the Content-Security-Policy forbids them)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONSOLE = ROOT / "gateway" / "console"


def test_vendored_files_match_their_pinned_hashes() -> None:
    done = subprocess.run(["bash", "scripts/console-assets.sh", "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("library", ["htmx", "uPlot"])
def test_each_vendored_library_has_its_license_beside_it(library: str) -> None:
    vendor = CONSOLE / "static" / "vendor"
    assert list(vendor.glob(f"{library}*.js"))
    assert (vendor / f"{library}.LICENSE").read_text().strip()


def test_the_wheel_carries_every_template_and_static_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gateway"]
    shipped = {p for pattern in patterns for p in (ROOT / "gateway").glob(pattern)}
    files = {p for folder in ("templates", "static") for p in (CONSOLE / folder).rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


def test_templates_hold_no_inline_script_style_or_handler() -> None:
    for template in (CONSOLE / "templates").glob("*.html"):
        html = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert re.search(r'src="\{\{ asset\(', tag), f"{template.name}: {tag}"
        assert not re.search(r"<script\b[^>]*>[^<\s]", html), template.name
        assert "<style" not in html and " style=" not in html, template.name
        assert not re.search(r"\son[a-z]+=", html), template.name
        assert "|safe" not in html and "Markup" not in html, template.name
