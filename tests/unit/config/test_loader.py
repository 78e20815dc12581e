"""gateway/config/loader.py and schema.py: every way a config file can be wrong, and what loads."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import get_args

import pytest

from gateway.config import schema
from gateway.config.loader import load_file, load_text
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError
from gateway.settings import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[3]
ISSUE_EXAMPLE = REPO / "tests" / "fixtures" / "issue_example.yaml"

BACKENDS = """\
backends:
  a: {type: openai, url: http://127.0.0.1:9/v1}
"""
MODELS = """\
models:
  m: {backend: a}
  n: {backend: a}
"""


def key_warnings(table: RoutingTable) -> list[str]:
    """The warnings about backends' keys (the others, about prices, are not these tests' concern)."""
    return [w for w in table.warnings if w.startswith("backend ")]


def load_error(tmp_path: Path, text: str | bytes) -> ConfigError:
    """Load `text` from a real file; return the ConfigError, checking that it names the file."""
    path = tmp_path / "nanoroute.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    err = info.value
    assert err.source == str(path)
    assert err.message.startswith(f"{path}: {len(err.problems)} problem(s)\n")
    return err


# -- the file itself -------------------------------------------------------------------------------


def test_unreadable_file_names_it_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_file(missing)
    assert info.value.source == str(missing)
    assert info.value.problems == (("", "cannot read the file: No such file or directory"),)
    assert f"{missing}: 1 problem(s)\n  <top>: cannot read the file" in info.value.message


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path)
    assert info.value.problems == (("", "cannot read the file: Is a directory"),)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert err.problems == (("", "the file is empty; expected a mapping with backends, models, policies"),)


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    # The flow mapping opened on line 4 is never closed; the parser notices on line 5.
    err = load_error(tmp_path, BACKENDS + "models:\n  m: {backend: a\n  n: x: y\n")
    [(where, why)] = err.problems
    assert where == "line 5, column 4"
    assert why.startswith("not valid YAML: ")
    assert "line 5, column 4: not valid YAML" in err.message


def test_invalid_yaml_mapping_value_where_not_allowed(tmp_path: Path) -> None:
    err = load_error(tmp_path, "backends: a: b\n")
    assert err.problems == (("line 1, column 12", "not valid YAML: mapping values are not allowed here"),)


@pytest.mark.parametrize("text", ["- backends\n- models\n", "just a string\n", "42\n"])
def test_top_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert err.problems == (("", "expected a mapping with backends, models, policies at the top"),)


def test_duplicate_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    text = BACKENDS + "  a: {type: openai, url: http://127.0.0.1:10/v1}\n" + MODELS + "  m: {backend: a}\n"
    err = load_error(tmp_path, text)
    assert err.problems == (
        ("backends.a (line 3)", "duplicate key; each key may appear once"),
        ("models.m (line 7)", "duplicate key; each key may appear once"),
    )


def test_duplicate_keys_inside_a_list_item(tmp_path: Path) -> None:
    text = BACKENDS + MODELS + "policies:\n  - name: p\n    name: q\n    candidates: [m]\n"
    err = load_error(tmp_path, text)
    assert err.problems == (("policies[0].name (line 8)", "duplicate key; each key may appear once"),)


# -- the schema: strict keys and types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BACKENDS + MODELS + "extra: 1\n", "extra (line 6)"),
        ("backends:\n  a: {type: openai, url: http://x, colour: red}\n" + MODELS, "backends.a.colour (line 2)"),
        (BACKENDS + "models:\n  m: {backend: a, cost: 3}\n", "models.m.cost (line 4)"),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m], fallbacks: [n]}\n",
         "policies[0].fallbacks (line 7)"),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m], match: {modle: x}}\n",
         "policies[0].match.modle (line 7)"),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m], require: {min_qual: 1}}\n",
         "policies[0].require.min_qual (line 7)"),
    ],
)
def test_unknown_keys_are_forbidden(tmp_path: Path, text: str, where: str) -> None:
    err = load_error(tmp_path, text)
    assert err.problems == ((where, "unknown key; check its spelling against docs/configuration.md"),)


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (BACKENDS + "models:\n  m: {backend: a, context_window: lots}\n", "models.m.context_window (line 4)",
         "valid integer"),
        (BACKENDS + "models:\n  m: {backend: a, context_window: 0}\n", "models.m.context_window (line 4)",
         "greater than or equal to 1"),
        (BACKENDS + "models:\n  m: {backend: a, quality: {default: 1.5}}\n", "models.m.quality.default (line 4)",
         "less than or equal to 1"),
        (BACKENDS + "models:\n  m: {backend: a, price: {input: -1, output: 0}}\n", "models.m.price.input (line 4)",
         "greater than or equal to 0"),
        (BACKENDS + "models: [m, n]\n", "models (line 3)", "valid dictionary"),
        (BACKENDS + "models: {}\n", "models (line 3)", "at least 1 item"),
        ("backends:\n  a: {type: openai, url: http://x, timeouts: {total_s: 0}}\n" + MODELS,
         "backends.a.timeouts.total_s (line 2)", "greater than 0"),
        ("backends:\n  a: {type: openai, url: http://x, headers: [x]}\n" + MODELS,
         "backends.a.headers (line 2)", "valid dictionary"),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: []}\n", "policies[0].candidates (line 7)",
         "at least 1 item"),
        (BACKENDS + MODELS + "policies:\n  - {name: 'bad name!', candidates: [m]}\n", "policies[0].name (line 7)",
         "should match pattern"),
        (BACKENDS + MODELS + "policies:\n  - {candidates: [m]}\n", "policies[0].name", "Field required"),
        (MODELS, "backends", "Field required"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, where: str, expected: str) -> None:
    err = load_error(tmp_path, text)
    [(path, why)] = err.problems
    assert path.startswith(where)
    assert expected in why


def test_every_schema_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "backends:\n  a: {type: openai, url: ftp://x}\nmodels:\n  m: {backend: a, context_window: x}\n"
    err = load_error(tmp_path, text)
    assert [p for p, _ in err.problems] == ["backends.a.url (line 2)", "models.m.context_window (line 4)"]


@pytest.mark.parametrize(
    ("backend", "where"),
    [
        ("{type: openai, url: ftp://example.com}", "backends.a.url (line 2)"),
        ("{type: openai, url: example.com/v1}", "backends.a.url (line 2)"),
        # The replica list is checked as a whole, so the path stops at the list.
        ("{type: vllm, urls: [http://ok/v1, localhost:8000]}", "backends.a.urls (line 2)"),
        ("{type: litellm, provider: anthropic, url: www.example.com}", "backends.a.url (line 2)"),
    ],
)
def test_bad_url(tmp_path: Path, backend: str, where: str) -> None:
    err = load_error(tmp_path, f"backends:\n  a: {backend}\n" + MODELS)
    assert err.problems == ((where, "expected an http:// or https:// URL"),)


def test_a_mapping_used_as_a_key_is_invalid_yaml(tmp_path: Path) -> None:
    err = load_error(tmp_path, "backends: {{a: 1}: x}\n")
    assert err.problems == (("line 1, column 12", "not valid YAML: found unhashable key"),)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BACKENDS + "models:\n  m: {backend: a, price: {input: 1, output: 1}, "
         "hourly: {usd_per_hour: 1, tokens_per_s: 10}}\n",
         ("models.m (line 4)", "give price or hourly, not both")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, strategy: weighted, candidates: [m, n]}\n",
         ("policies[0] (line 7)", "strategy 'weighted' needs weights: {model: weight} for its candidates")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, strategy: weighted, candidates: [m, n], "
         "weights: {m: 1, x: 2}}\n",
         ("policies[0] (line 7)", "weights must name exactly the candidates (missing: ['n'], not candidates: ['x'])")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m, n], weights: {m: 1, n: 2}}\n",
         ("policies[0] (line 7)", "weights and sticky apply only to strategy 'weighted'")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m, n], sticky: user}\n",
         ("policies[0] (line 7)", "weights and sticky apply only to strategy 'weighted'")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m, n], cascade: {refusal: false}}\n",
         ("policies[0] (line 7)", "cascade settings apply only to strategy 'cascade'")),
        (BACKENDS + MODELS + "policies:\n  - {name: p, strategy: cascade, candidates: [m, n], "
         "cascade: {regex: '('}}\n",
         ("policies[0].cascade.regex (line 7)",
          "not a valid regular expression: missing ), unterminated subpattern at position 0")),
        ("backends:\n  a: {type: openai, url: http://x, breaker: {cooldown_s: 10, max_cooldown_s: 5}}\n" + MODELS,
         ("backends.a.breaker (line 2)", "max_cooldown_s must be at least cooldown_s")),
    ],
    ids=["price-and-hourly", "weighted-without-weights", "weights-not-candidates", "weights-without-weighted",
         "sticky-without-weighted", "cascade-without-cascade", "bad-cascade-regex", "breaker-cooldowns"],
)
def test_rules_across_keys(tmp_path: Path, text: str, problem: tuple[str, str]) -> None:
    assert load_error(tmp_path, text).problems == (problem,)


def test_vllm_replicas_must_be_distinct(tmp_path: Path) -> None:
    err = load_error(tmp_path, "backends:\n  a: {type: vllm, urls: [http://r/v1, http://r/v1/]}\n" + MODELS)
    assert err.problems == (("backends.a.urls (line 2)", "replica URLs must be distinct"),)


def test_unknown_backend_type(tmp_path: Path) -> None:
    err = load_error(tmp_path, "backends:\n  a: {type: grpc, url: http://x}\n" + MODELS)
    expected = "unknown backend type; expected one of openai, azure, vllm, litellm"
    assert err.problems == (("backends.a (line 2)", expected),)


def test_missing_backend_type(tmp_path: Path) -> None:
    err = load_error(tmp_path, "backends:\n  a: {url: http://x}\n" + MODELS)
    expected = "missing key 'type'; expected one of openai, azure, vllm, litellm"
    assert err.problems == (("backends.a (line 2)", expected),)


def test_unknown_key_of_one_backend_type_names_the_key_not_the_type(tmp_path: Path) -> None:
    # `urls` belongs to vllm; the discriminator's tag must not leak into the path.
    err = load_error(tmp_path, "backends:\n  a: {type: openai, url: http://x, urls: [http://y]}\n" + MODELS)
    assert err.problems == (
        ("backends.a.urls (line 2)", "unknown key; check its spelling against docs/configuration.md"),
    )


def test_unknown_strategy(tmp_path: Path) -> None:
    err = load_error(tmp_path, BACKENDS + MODELS + "policies:\n  - {name: p, strategy: random, candidates: [m]}\n")
    [(where, why)] = err.problems
    assert where == "policies[0].strategy (line 7)"
    assert why.startswith("unknown strategy; input should be ")
    for strategy in get_args(schema.Strategy):
        assert f"'{strategy}'" in why


# -- phase two: references ---------------------------------------------------------------------------


def test_unknown_backend_reference(tmp_path: Path) -> None:
    err = load_error(tmp_path, BACKENDS + "models:\n  m: {backend: b}\n")
    assert err.problems == (("models.m.backend (line 4)", "unknown backend 'b'; expected one of: a"),)


def test_unknown_backend_reference_suggests_a_close_name(tmp_path: Path) -> None:
    text = "backends:\n  local-vllm: {type: vllm, urls: [http://x]}\nmodels:\n  m: {backend: Local-VLLM}\n"
    err = load_error(tmp_path, text)
    assert err.problems == (
        ("models.m.backend (line 4)",
         "unknown backend 'Local-VLLM'; expected one of: local-vllm; did you mean 'local-vllm'?"),
    )


def test_unknown_model_in_candidates_and_fallback(tmp_path: Path) -> None:
    text = BACKENDS + MODELS + "policies:\n  - name: p\n    candidates: [m, nope]\n    fallback: [n, gone]\n"
    err = load_error(tmp_path, text)
    assert err.problems == (
        ("policies[0].candidates[1] (line 8)", "unknown model 'nope'; expected one of: m, n"),
        ("policies[0].fallback[1] (line 9)", "unknown model 'gone'; expected one of: m, n"),
    )


def test_a_model_with_a_bad_backend_is_reported_once(tmp_path: Path) -> None:
    # The policy's reference to `x` is fine; `x` itself is wrong, and only that is reported.
    text = BACKENDS + "models:\n  m: {backend: a}\n  x: {backend: b}\npolicies:\n  - {name: p, candidates: [m, x]}\n"
    err = load_error(tmp_path, text)
    assert err.problems == (("models.x.backend (line 5)", "unknown backend 'b'; expected one of: a"),)


def test_direct_is_a_reserved_policy_name(tmp_path: Path) -> None:
    err = load_error(tmp_path, BACKENDS + MODELS + "policies:\n  - {name: direct, candidates: [m]}\n")
    assert err.problems == (
        ("policies[0].name (line 7)",
         "'direct' is reserved for requests that name a catalog model and match no policy"),
    )


def test_duplicate_policy_names(tmp_path: Path) -> None:
    text = BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m]}\n  - {name: p, candidates: [n]}\n"
    err = load_error(tmp_path, text)
    assert err.problems == (("policies[1].name (line 8)", "policy name 'p' is used twice"),)


def test_a_model_listed_twice_in_candidates(tmp_path: Path) -> None:
    err = load_error(tmp_path, BACKENDS + MODELS + "policies:\n  - {name: p, candidates: [m, n, m]}\n")
    assert err.problems == (("policies[0].candidates (line 7)", "a model is listed twice"),)


def test_api_key_env_and_api_key_file_together(tmp_path: Path) -> None:
    text = "backends:\n  a: {type: openai, url: http://x, api_key_env: HOME, api_key_file: /run/key}\n" + MODELS
    err = load_error(tmp_path, text)
    assert err.problems == (("backends.a (line 2)", "give api_key_env or api_key_file, not both"),)


def test_every_reference_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = BACKENDS + "models:\n  m: {backend: b}\n  n: {backend: a}\npolicies:\n" \
        "  - {name: direct, candidates: [n, zz]}\n  - {name: direct, candidates: [n, n]}\n"
    err = load_error(tmp_path, text)
    assert [p for p, _ in err.problems] == [
        "models.m.backend (line 4)",
        "policies[0].name (line 7)",
        "policies[0].candidates[1] (line 7)",
        "policies[1].name (line 8)",
        "policies[1].name (line 8)",
        "policies[1].candidates (line 8)",
    ]
    assert err.message.count("\n") == len(err.problems)


# -- what loads ---------------------------------------------------------------------------------------


def test_issue_example_loads_exactly_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    table = load_file(ISSUE_EXAMPLE)
    assert isinstance(table, RoutingTable)
    assert table.source == str(ISSUE_EXAMPLE)
    assert key_warnings(table) == []
    assert set(table.config.backends) == {"local", "openai", "anthropic"}
    lora = table.models["support-lora"]
    assert (lora.backend, lora.upstream_name, lora.context_window) == ("local", "support-v3", 2048)
    assert lora.input_usd_per_token == pytest.approx(0.02e-6)
    assert lora.quality_for("support") == 0.92
    assert lora.quality_for("chat") is None
    assert table.models["gpt-4o-mini"].quality_for("chat") == 0.9
    assert table.models["claude-haiku"].upstream_name == "claude-3-5-haiku-latest"
    support, default = table.policies
    assert (support.name, support.strategy, support.tasks) == ("support", "cheapest", frozenset({"support"}))
    assert support.model_pattern is None
    assert [m.name for m in support.candidates] == ["support-lora", "gpt-4o-mini"]
    assert [m.name for m in support.fallback] == ["gpt-4o-mini", "claude-haiku"]
    assert (support.require.min_quality, support.require.p95_latency_ms) == (0.9, 1500)
    assert (default.name, default.tasks, default.model_pattern) == ("default", None, None)
    assert table.client_models == ("support-lora", "gpt-4o-mini", "claude-haiku")


def test_a_resolved_model_is_shared_between_policies() -> None:
    table = load_file(ISSUE_EXAMPLE)
    support, default = table.policies
    assert support.candidates[1] is default.candidates[0] is table.models["gpt-4o-mini"]


def test_the_version_is_a_hash_of_the_bytes() -> None:
    text = ISSUE_EXAMPLE.read_text()
    assert load_text(text).version == load_file(ISSUE_EXAMPLE).version
    assert load_text(text + "\n# a comment\n").version != load_text(text).version
    assert len(load_text(text).version) == 12


def _policy_files() -> list[Path]:
    return sorted((REPO / "policies").glob("*.yaml"))


def test_there_are_policy_files() -> None:
    assert _policy_files(), "policies/ holds no *.yaml"


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_every_file_in_policies_loads(path: Path) -> None:
    table = load_file(path)
    assert table.models
    assert all(m.backend in table.config.backends for m in table.models.values())


def test_the_embedded_default_loads() -> None:
    table = load_file(DEFAULT_CONFIG)
    assert [p.name for p in table.policies] == ["default"]


def test_unset_api_key_env_is_a_warning_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANOROUTE_TEST_UNSET_KEY", raising=False)
    text = "backends:\n  a: {type: openai, url: http://x, api_key_env: NANOROUTE_TEST_UNSET_KEY}\n" + MODELS
    assert key_warnings(load_text(text)) == ["backend 'a': environment variable NANOROUTE_TEST_UNSET_KEY is not set"]
    monkeypatch.setenv("NANOROUTE_TEST_UNSET_KEY", "secret")
    assert key_warnings(load_text(text)) == []


def test_an_empty_api_key_env_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_EMPTY_KEY", "")
    text = "backends:\n  a: {type: openai, url: http://x, api_key_env: NANOROUTE_TEST_EMPTY_KEY}\n" + MODELS
    assert len(key_warnings(load_text(text))) == 1


def test_api_key_file_alone_gives_no_warning(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("secret\n")
    table = load_text(f"backends:\n  a: {{type: openai, url: http://x, api_key_file: {key}}}\n" + MODELS)
    assert key_warnings(table) == []
    assert table.config.backends["a"].api_key_file == key


def test_url_trailing_slash_is_dropped() -> None:
    table = load_text("backends:\n  a: {type: openai, url: 'http://x/v1/'}\n" + MODELS)
    assert table.config.backends["a"].url == "http://x/v1"


GLOBS = BACKENDS + MODELS + """\
policies:
  - name: g
    match: {model: ["gpt-4*", exact-name, "llama-?b", "m"]}
    candidates: [m]
  - name: one
    match: {model: single, task: chat}
    candidates: [n]
"""


def test_client_models_are_catalog_names_then_literal_match_names() -> None:
    table = load_text(GLOBS)
    assert table.client_models == ("m", "n", "exact-name", "single")


def test_model_globs_are_compiled_into_one_pattern() -> None:
    pattern = load_text(GLOBS).policies[0].model_pattern
    assert pattern is not None
    for name in ("gpt-4", "gpt-4o-mini", "exact-name", "llama-7b", "m"):
        assert pattern.fullmatch(name), name
    for name in ("xgpt-4", "exact-name2", "llama-70b", "mm", "GPT-4"):
        assert not pattern.fullmatch(name), name


def test_a_single_string_is_a_one_item_list() -> None:
    one = load_text(GLOBS).policies[1]
    assert one.tasks == frozenset({"chat"})
    assert one.model_pattern is not None and one.model_pattern.fullmatch("single")
    assert not one.model_pattern.fullmatch("singles")
    assert load_text(GLOBS).config.policies[1].match.model == ["single"]


def test_no_model_match_means_no_pattern() -> None:
    table = load_text(BACKENDS + MODELS + "policies:\n  - {name: all, candidates: [m]}\n")
    assert (table.policies[0].model_pattern, table.policies[0].tasks) == (None, None)


def test_the_table_is_frozen() -> None:
    table = load_text(GLOBS)
    with pytest.raises(TypeError):
        table.models["x"] = table.models["m"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        table.policies[0].name = "other"  # type: ignore[misc]


def test_load_text_accepts_bytes_and_str_alike() -> None:
    assert load_text(GLOBS.encode()).version == load_text(GLOBS).version
    assert os.fspath(load_text(GLOBS).source) == "<config>"


def test_a_litellm_backend_without_litellm_installed_names_the_extra(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The default image has no litellm: the config fails at load (`nanoroute check`, start-up, a live reload)
    # rather than at the first request. None in sys.modules is how Python marks a package as not importable.
    text = "backends:\n  a: {type: openai, url: http://127.0.0.1:9/v1}\n  b: {type: litellm, provider: anthropic}\n"
    text += "models:\n  m: {backend: a}\n  n: {backend: b}\n"
    assert load_text(text).models["n"].backend == "b"  # with litellm (the test extra has it), it loads
    monkeypatch.setitem(sys.modules, "litellm", None)
    err = load_error(tmp_path, text)
    [(where, why)] = err.problems
    assert where == "backends.b.type (line 3)"
    assert "nanoroute[litellm]" in why and "EXTRAS=litellm" in why
