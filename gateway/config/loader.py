"""YAML -> strict schema -> resolved, frozen `RoutingTable`.

Every problem is reported with the file, the path inside it (with its line) and what was expected,
all problems of a phase at once, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config import schema
from gateway.config.table import DIRECT, ModelRoute, PolicyRoute, RoutingTable
from gateway.errors import ConfigError

Problems = list[tuple[str, str]]


def load_file(path: str | os.PathLike[str]) -> RoutingTable:
    source = os.fspath(path)
    try:
        text = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    return load_text(text, source)


def load_text(text: str | bytes, source: str = "<config>") -> RoutingTable:
    raw = text.encode() if isinstance(text, str) else text
    root, data = _parse_yaml(raw, source)
    try:
        cfg = schema.Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _validation_problems(exc, root)) from None
    return resolve(cfg, source, hashlib.sha256(raw).hexdigest()[:12], root)


def _parse_yaml(raw: bytes, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if root is None:
        raise ConfigError(source, [("", "the file is empty; expected a mapping with backends, models, policies")])
    dupes = list(_duplicate_keys(root, ""))
    if dupes:
        raise ConfigError(source, dupes)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(root)
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "expected a mapping with backends, models, policies at the top")])
    return root, data


def _duplicate_keys(node: yaml.Node, path: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            sub = f"{path}.{name}" if path else name
            if name in seen:
                yield (f"{sub} (line {key.start_mark.line + 1})", "duplicate key; each key may appear once")
            seen.add(name)
            yield from _duplicate_keys(value, sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")


def _line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line where the value at `loc` starts, or of its nearest existing parent."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((v for k, v in node.value if str(k.value) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            found = node.value[part]
        else:
            found = None
        if found is None:
            break
        node = found
    return None if node is None else node.start_mark.line + 1


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(root: yaml.Node | None, loc: tuple[str | int, ...]) -> str:
    line = _line_of(root, loc)
    return f"{_format_loc(loc)} (line {line})" if line is not None else _format_loc(loc)


def _validation_problems(exc: ValidationError, root: yaml.Node | None) -> Problems:
    problems: Problems = []
    for err in exc.errors(include_url=False):
        # Discriminated unions add the tag ("openai", "vllm") to the location; it is not in the file.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in {"openai", "vllm", "litellm"}))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against docs/configuration.md"
        elif err["type"] == "union_tag_invalid":
            msg = "unknown backend type; expected one of openai, vllm, litellm"
        elif err["type"] == "union_tag_not_found":
            msg = "missing key 'type'; expected one of openai, vllm, litellm"
        elif err["type"] == "literal_error" and loc and loc[-1] == "strategy":
            msg = f"unknown strategy; {msg[0].lower()}{msg[1:]}"
        problems.append((_at(root, loc), msg))
    return problems


def resolve(cfg: schema.Config, source: str, version: str, root: yaml.Node | None = None) -> RoutingTable:
    """Phase two: turn names into objects and check every reference; fail with all problems at once."""
    problems: Problems = []
    warnings: list[str] = []
    for name, backend in cfg.backends.items():
        env = backend.api_key_env
        if env and not os.environ.get(env) and backend.api_key_file is None:
            warnings.append(f"backend '{name}': environment variable {env} is not set")
        if backend.api_key_env and backend.api_key_file:
            problems.append((_at(root, ("backends", name)), "give api_key_env or api_key_file, not both"))

    models: dict[str, ModelRoute] = {}
    for name, m in cfg.models.items():
        if m.backend not in cfg.backends:
            problems.append((_at(root, ("models", name, "backend")), _unknown("backend", m.backend, cfg.backends)))
            continue
        models[name] = ModelRoute(
            name=name,
            backend=m.backend,
            upstream_name=m.name or name,
            context_window=m.context_window,
            input_usd_per_token=m.price.input / 1e6 if m.price else None,
            output_usd_per_token=m.price.output / 1e6 if m.price else None,
            quality=MappingProxyType(dict(m.quality)),
            latency=m.latency,
        )

    policies: list[PolicyRoute] = []
    seen: set[str] = set()
    literal_names: list[str] = []
    for i, p in enumerate(cfg.policies):
        if p.name == DIRECT:
            problems.append((_at(root, ("policies", i, "name")), f"'{DIRECT}' is reserved for requests that "
                             "name a catalog model and match no policy"))
        if p.name in seen:
            problems.append((_at(root, ("policies", i, "name")), f"policy name '{p.name}' is used twice"))
        seen.add(p.name)
        refs: dict[str, tuple[ModelRoute, ...]] = {}
        for field_name in ("candidates", "fallback"):
            found = []
            for j, ref in enumerate(getattr(p, field_name)):
                if ref in models:
                    found.append(models[ref])
                elif ref not in cfg.models:  # a model with a bad backend was reported above
                    problems.append((_at(root, ("policies", i, field_name, j)), _unknown("model", ref, cfg.models)))
            refs[field_name] = tuple(found)
        if len(set(p.candidates)) != len(p.candidates):
            problems.append((_at(root, ("policies", i, "candidates")), "a model is listed twice"))
        pattern = None
        if p.match.model is not None:
            pattern = re.compile("|".join(fnmatch.translate(g) for g in p.match.model))
            literal_names += [g for g in p.match.model if not any(c in g for c in "*?[")]
        policies.append(PolicyRoute(
            name=p.name,
            model_pattern=pattern,
            tasks=frozenset(p.match.task) if p.match.task is not None else None,
            strategy=p.strategy,
            candidates=refs["candidates"],
            fallback=refs["fallback"],
            require=p.require,
        ))
    if problems:
        raise ConfigError(source, problems)
    client_models = tuple(dict.fromkeys([*models, *literal_names]))
    return RoutingTable(
        config=cfg,
        models=MappingProxyType(models),
        policies=tuple(policies),
        client_models=client_models,
        source=source,
        version=version,
        loaded_at=time.time(),
        warnings=tuple(warnings),
    )


def _unknown(kind: str, name: str, known: Any) -> str:
    close = [k for k in known if k.lower() == name.lower() or fnmatch.fnmatch(k, f"*{name}*")][:3]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} '{name}'; expected one of: {', '.join(sorted(known))}{hint}"
