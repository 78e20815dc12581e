"""YAML -> strict schema -> resolved, frozen `RoutingTable`.

Every problem is reported with the file, the path inside it (with its line) and what was expected,
all problems of a phase at once, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.util
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config import costmap, schema
from gateway.config import manifest as manifest_mod
from gateway.config.redact import Redactor
from gateway.config.secrets import KEY_TEXT, MIN_KEY_CHARS
from gateway.config.table import (
    DIRECT,
    CaptureRoute,
    ChainSettings,
    KeyAccess,
    LearnedRoute,
    ModelRoute,
    PolicyRoute,
    RolloutRoute,
    RoutingTable,
)
from gateway.errors import ConfigError
from gateway.learned import model as learned_model
from gateway.learned.calibrate import calibrate

Problems = list[tuple[str, str]]

LITELLM_MISSING = ("needs litellm, which this installation does not have: install nanoroute[litellm], or run the "
                   "image built with EXTRAS=litellm (docs/deploy.md, \"The image\")")


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
    table = resolve(cfg, source, hashlib.sha256(raw).hexdigest()[:12], root)
    if table.inputs:  # the manifests are part of what is serving: a change to one is a new version
        table = dataclasses.replace(table, version=fingerprint(raw, table.inputs))
    return table


def fingerprint(raw: bytes, inputs: Iterable[str] = ()) -> str:
    """A config version: the file's bytes and those of the other files it reads (adapter manifests)."""
    h = hashlib.sha256(raw)
    for path in inputs:
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = b"\0missing"
        h.update(b"\0" + path.encode() + b"\0" + data)
    return h.hexdigest()[:12]


def _parse_yaml(raw: bytes, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    if root is None:
        raise ConfigError(source, [("", "the file is empty; expected a mapping with backends, models, policies")])
    dupes = list(_duplicate_keys(root, ""))
    if dupes:
        raise ConfigError(source, dupes)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:  # e.g. a mapping used as a key: `{{a: 1}}`
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "expected a mapping with backends, models, policies at the top")])
    return root, data


def _yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return ConfigError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")])


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
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in {"openai", "azure", "vllm", "litellm"}))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against docs/configuration.md"
        elif err["type"] == "union_tag_invalid":
            msg = "unknown backend type; expected one of openai, azure, vllm, litellm"
        elif err["type"] == "union_tag_not_found":
            msg = "missing key 'type'; expected one of openai, azure, vllm, litellm"
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
        if isinstance(backend, schema.LitellmBackend) and not _installed("litellm"):
            problems.append((_at(root, ("backends", name, "type")), LITELLM_MISSING))

    models: dict[str, ModelRoute] = {}
    adapters_dir = adapters_dir_of(cfg, source)
    inputs: list[str] = []
    for name, m in cfg.models.items():
        if m.backend not in cfg.backends:
            problems.append((_at(root, ("models", name, "backend")), _unknown("backend", m.backend, cfg.backends)))
            continue
        manifest = None
        if m.adapter is not None:
            inputs.append(str(manifest_mod.manifest_path(adapters_dir, m.adapter)))
            try:
                manifest = _adapter(m, cfg.backends[m.backend], adapters_dir)
            except manifest_mod.ManifestError as exc:
                problems.append((_at(root, ("models", name, "adapter")), str(exc)))
                continue
        models[name] = _model_route(name, m, cfg.backends[m.backend], warnings, manifest, adapters_dir)

    def model_ref(name: str, path: tuple[str | int, ...]) -> ModelRoute | None:
        """The catalog model a policy names; an unknown name is a problem at `path`. None for a model that
        is not in the table: unknown, or with a bad backend (reported above)."""
        if name not in cfg.models:
            problems.append((_at(root, path), _unknown("model", name, cfg.models)))
        return models.get(name)

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
            found = (model_ref(ref, ("policies", i, field_name, j)) for j, ref in enumerate(getattr(p, field_name)))
            refs[field_name] = tuple(m for m in found if m is not None)
        if len(set(p.candidates)) != len(p.candidates):
            problems.append((_at(root, ("policies", i, "candidates")), "a model is listed twice"))
        pattern = None
        literal: list[str] = []
        if p.match.model is not None:
            pattern = re.compile("|".join(fnmatch.translate(g) for g in p.match.model))
            literal = [g for g in p.match.model if not any(c in g for c in "*?[")]
            literal_names += literal
        rollout = None
        if p.rollout is not None:
            judge = None if p.rollout.judge is None else model_ref(p.rollout.judge, ("policies", i, "rollout", "judge"))
            model = model_ref(p.rollout.model, ("policies", i, "rollout", "model"))
            if model is not None:
                rollout = RolloutRoute(model, p.rollout, judge)
        learned = None
        if p.strategy == "learned" and len(refs["candidates"]) == len(p.candidates):
            assert p.router is not None
            path = artifact_path(p.router, source)
            inputs.append(str(path / learned_model.MANIFEST))
            try:
                learned = _learned_route(p, path, refs["candidates"], warnings)
            except ValueError as exc:  # ArtifactError, or candidates the router cannot calibrate for
                problems.append((_at(root, ("policies", i, "router")), str(exc)))
        policies.append(_policy_route(p, pattern, refs["candidates"], refs["fallback"], _capture_route(p, cfg),
                                      rollout, tuple(literal), learned))
    access = _key_access(cfg, root, problems)
    declared = _declared_keys(cfg, root, problems)
    inputs += [str(k.secret_file) for k in cfg.keys.values() if k.secret_file is not None]
    if problems:
        raise ConfigError(source, problems)
    client_models = tuple(dict.fromkeys([*models, *literal_names]))
    pin_keys = frozenset(cfg.pinning.allow_keys)
    return RoutingTable(
        config=cfg,
        models=MappingProxyType(models),
        policies=tuple(policies),
        client_models=client_models,
        source=source,
        version=version,
        loaded_at=time.time(),
        inputs=tuple(dict.fromkeys(inputs)),
        warnings=tuple(warnings),
        pin_keys=pin_keys,
        access=MappingProxyType(access),
        declared_keys=MappingProxyType(declared),
        direct=cfg.direct.enabled,
        redactor=Redactor(cfg.capture.redact.builtin, cfg.capture.redact.patterns),
        tasks=frozenset(t for p in cfg.policies for t in (p.match.task or ()))
        | frozenset(t for m in models.values() for t in m.quality if t != "default"),
    )


def _key_access(cfg: schema.Config, root: yaml.Node | None, problems: Problems) -> dict[str, KeyAccess]:
    """The config's `keys`, each name it lists checked against the catalog, the policies and the teams."""
    policy_names = [p.name for p in cfg.policies]
    access: dict[str, KeyAccess] = {}
    for key, k in cfg.keys.items():
        for field_name, known, kind in (("models", cfg.models, "model"), ("policies", policy_names, "policy")):
            for j, ref in enumerate(getattr(k, field_name) or ()):
                if ref not in known:
                    problems.append((_at(root, ("keys", key, field_name, j)), _unknown(kind, ref, known)))
        if k.team is not None and k.team not in cfg.teams:
            problems.append((_at(root, ("keys", key, "team")), _unknown("team", k.team, cfg.teams)))
        access[key] = KeyAccess(None if k.models is None else frozenset(k.models),
                                None if k.policies is None else frozenset(k.policies))
    return access


def _declared_keys(cfg: schema.Config, root: yaml.Node | None, problems: Problems) -> dict[str, bytes]:
    """The SHA-256 digest of each key the config gives itself (`digest`, or the text of `secret_file`)."""
    declared: dict[str, bytes] = {}
    for name, k in cfg.keys.items():
        if k.digest is not None:
            declared[name] = bytes.fromhex(k.digest.removeprefix("sha256:"))
        elif k.secret_file is not None:
            try:
                secret = k.secret_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append((_at(root, ("keys", name, "secret_file")), f"cannot read the key: {exc}"))
                continue
            if not KEY_TEXT.fullmatch(secret) or len(secret) < MIN_KEY_CHARS:
                problems.append((_at(root, ("keys", name, "secret_file")),
                                 f"the file must hold one key of at least {MIN_KEY_CHARS} printable characters "
                                 "without spaces"))
                continue
            declared[name] = hashlib.sha256(secret.encode()).digest()
    if len(set(declared.values())) < len(declared):
        problems.append((_at(root, ("keys",)), "two keys have the same secret"))
    return declared


def _policy_route(
    p: schema.Policy, pattern: re.Pattern[str] | None, candidates: tuple[ModelRoute, ...],
    fallback: tuple[ModelRoute, ...], capture: CaptureRoute | None = None, rollout: RolloutRoute | None = None,
    literal: tuple[str, ...] = (),
    learned: LearnedRoute | None = None,
) -> PolicyRoute:
    weights: tuple[float, ...] = ()
    if p.weights:
        total = sum(p.weights.values())
        weights = tuple(p.weights[c.name] / total for c in candidates)
    r = p.require
    needs_tokens = (
        p.strategy in ("cheapest", "fastest", "cascade")
        or any(v is not None for v in (r.max_cost_usd, r.p95_latency_ms, r.min_context))
        or p.match.min_prompt_tokens is not None
        or p.match.max_prompt_tokens is not None
    )
    cascade = p.cascade or (schema.Cascade() if p.strategy == "cascade" else None)
    return PolicyRoute(
        name=p.name,
        model_pattern=pattern,
        tasks=frozenset(p.match.task) if p.match.task is not None else None,
        strategy=p.strategy,
        candidates=candidates,
        fallback=fallback,
        require=p.require,
        match=p.match,
        keys=frozenset(p.match.key) if p.match.key is not None else None,
        on_unmet=p.on_unmet,
        weights=weights,
        sticky=p.sticky,
        cascade=cascade,
        cascade_regex=re.compile(cascade.regex) if cascade is not None and cascade.regex else None,
        needs_tokens=needs_tokens,
        reliability=ChainSettings.of(p.reliability),
        capture=capture,
        rollout=rollout,
        learned=learned,
        literal_models=literal,
    )


def artifact_path(folder: str, source: str) -> Path:
    """A `learned` policy's router folder, a relative one taken from the config file's folder."""
    path = Path(folder)
    if path.is_absolute() or source.startswith("<"):
        return path
    return Path(source).parent / path


def _learned_route(p: schema.Policy, path: Path, candidates: tuple[ModelRoute, ...],
                   warnings: list[str]) -> LearnedRoute:
    """The router at `path`, its candidates in price order and the threshold calibrated for the policy's
    floor or cost target; raises ValueError with what is wrong."""
    router = learned_model.load(path)
    missing = [c.name for c in candidates if c.name not in router.models]
    if missing:
        raise ValueError(f"the router at {path} predicts {', '.join(router.models)}, not {', '.join(missing)}: "
                         "train it on data that scores every candidate")

    def price(m: ModelRoute) -> float:
        if m.input_usd_per_token is None or m.output_usd_per_token is None:
            return math.inf
        return m.input_usd_per_token + m.output_usd_per_token

    order = sorted(candidates, key=price)  # stable: the policy's order among equal prices
    columns = tuple(router.models.index(m.name) for m in order)
    threshold = calibrate(router.calibration, columns, min_quality=p.require.min_quality, max_share=p.max_share)
    if not threshold.meets:
        warnings.append(f"policy '{p.name}': on the router's held-out rows even {order[-1].name} alone scores "
                        f"{threshold.quality:.3f}, below min_quality; it gets every request")
    return LearnedRoute(router, tuple(m.name for m in order), columns, threshold)


def _capture_route(p: schema.Policy, cfg: schema.Config) -> CaptureRoute | None:
    """A request is filed under its task when the config names that task, else under the policy's name."""
    if p.capture is None:
        return None
    tasks = p.capture.tasks or p.match.task
    if tasks:
        return CaptureRoute(p.capture.sample, frozenset(tasks), frozenset(tasks), p.name)
    named = {t for q in cfg.policies for t in (q.match.task or ())}
    named |= {t for q in cfg.policies if q.capture is not None for t in (q.capture.tasks or ())}
    named |= {t for m in cfg.models.values() for t in m.quality if t != "default"}
    return CaptureRoute(p.capture.sample, None, frozenset(named), p.name)


def adapters_dir_of(cfg: schema.Config, source: str) -> Path:
    """`adapters_dir`, a relative one taken from the config file's folder (the working directory for
    a config that is not a file)."""
    if cfg.adapters_dir.is_absolute() or source.startswith("<"):
        return cfg.adapters_dir
    return Path(source).parent / cfg.adapters_dir


def _adapter(m: schema.Model, backend: schema.Backend, adapters_dir: Path) -> manifest_mod.Manifest:
    if not isinstance(backend, schema.VllmBackend):
        raise manifest_mod.ManifestError(f"adapters are served by vllm backends; '{m.backend}' is {backend.type}")
    assert m.adapter is not None
    return manifest_mod.read(manifest_mod.manifest_path(adapters_dir, m.adapter))


def _model_route(name: str, m: schema.Model, backend: schema.Backend, warnings: list[str],
                 manifest: manifest_mod.Manifest | None = None, adapters_dir: Path | None = None) -> ModelRoute:
    upstream = m.name or (manifest.name if manifest is not None else name)
    quality = {**manifest.quality(), **m.quality} if manifest is not None else dict(m.quality)
    price_in = price_out = None
    source = None
    window = m.context_window
    if m.price is not None:
        price_in, price_out, source = m.price.input / 1e6, m.price.output / 1e6, "config"
    elif m.hourly is not None:
        per_s = m.hourly.usd_per_hour / 3600
        price_out = per_s / m.hourly.tokens_per_s
        price_in = per_s / (m.hourly.input_tokens_per_s or 10 * m.hourly.tokens_per_s)
        source = "hourly"
    if source is None or window is None:
        provider = backend.provider if isinstance(backend, schema.LitellmBackend) else None
        entry = costmap.lookup(upstream, provider) if not isinstance(backend, schema.VllmBackend) else None
        if entry is not None:
            if source is None and entry.input_usd_per_token is not None and entry.output_usd_per_token is not None:
                price_in, price_out, source = entry.input_usd_per_token, entry.output_usd_per_token, "cost_map"
            window = window if window is not None else entry.context_window
        if source is None:
            warnings.append(f"model '{name}': no price in the config or the cost map; cost-based routing ranks it last")
    return ModelRoute(
        name=name,
        backend=m.backend,
        upstream_name=upstream,
        context_window=window,
        input_usd_per_token=price_in,
        output_usd_per_token=price_out,
        quality=MappingProxyType(quality),
        latency=m.latency,
        price_source=source,
        max_in_flight=m.max_in_flight,
        adapter_path=manifest_mod.location(manifest, adapters_dir) if manifest and adapters_dir else None,
        adapter_base=manifest.base_model if manifest is not None else None,
    )


def _installed(package: str) -> bool:
    """Whether `package` can be imported, found without importing it (litellm's import takes seconds)."""
    return importlib.util.find_spec(package) is not None


def _unknown(kind: str, name: str, known: Any) -> str:
    close = [k for k in known if k.lower() == name.lower() or fnmatch.fnmatch(k, f"*{name}*")][:3]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} '{name}'; expected one of: {', '.join(sorted(known))}{hint}"
