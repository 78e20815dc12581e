"""Read the repository's Dockerfile into stages and instructions, so that tests run what it says.

Enough of the format for our own file: comments, line continuations, ARG defaults in FROM, exec-form (JSON)
and shell-form arguments, `--flag=value` options on COPY and HEALTHCHECK.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ENV...
    args: str  # the rest of the instruction, continuations joined
    line: int

    def words(self, args: dict[str, str] | None = None) -> list[str]:
        """Exec form as a list, shell form split as a shell would, with `args` (build arguments) substituted
        for `$NAME` and `${NAME}` in shell form."""
        if self.args.startswith("["):
            words: list[str] = json.loads(self.args)
            return words
        values = args or {}
        return [re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m[1] or m[2]], w) for w in shlex.split(self.args)]

    def options(self) -> tuple[dict[str, str], list[str]]:
        """Leading `--name=value` options, and the words after them."""
        words = shlex.split(self.args)
        opts = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            opts[name] = value
        return opts, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def build_args(self) -> dict[str, str]:
        """The stage's ARGs with their defaults (quotes removed), as `--build-arg` would override them."""
        out: dict[str, str] = {}
        for ins in self.all("ARG"):
            key, _, default = ins.args.partition("=")
            out[key] = "".join(shlex.split(default))
        return out

    def env(self) -> dict[str, str]:
        """The ENV instructions' variables (KEY=VALUE form), in order, later ones winning."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {ins.line}: use ENV KEY=VALUE"
                out[key] = value
        return out


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARGs declared before the first FROM, with their defaults
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(p for p in pending if p)))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in _logical_lines(path.read_text()):
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], rest.split()[0])
            name = rest.split()[2] if re.search(r"\s+AS\s+", rest, re.IGNORECASE) else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, line))
    return Dockerfile(args, stages)
