"""gateway/config/schema.py and loader.py, for policies and prices: strategy settings, cascade checks,
`price` versus `hourly`, and where each model's price comes from."""

from __future__ import annotations

import pytest

from gateway.config import costmap, schema
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError

HEAD = """\
backends:
  local:  {type: vllm, urls: ["http://127.0.0.1:9/v1"]}
  hosted: {type: openai, url: "http://127.0.0.1:9/v1"}
  claude: {type: litellm, provider: anthropic}
models:
  a: {backend: local}
  b: {backend: local}
policies:
"""  # policies start on line 9


def load(policies: str) -> RoutingTable:
    return load_text(HEAD + policies)


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return list(info.value.problems)


# -- strategy settings -------------------------------------------------------------------------------

INVALID_POLICIES = [
    ("weighted-without-weights", "  - {name: p, strategy: weighted, candidates: [a, b]}\n",
     "policies[0] (line 9)", "strategy 'weighted' needs weights: {model: weight} for its candidates"),
    ("weights-missing-a-candidate", "  - {name: p, strategy: weighted, candidates: [a, b], weights: {a: 1}}\n",
     "policies[0] (line 9)", "weights must name exactly the candidates (missing: ['b'], not candidates: [])"),
    ("weights-naming-another-model",
     "  - {name: p, strategy: weighted, candidates: [a], weights: {a: 1, b: 1}}\n",
     "policies[0] (line 9)", "weights must name exactly the candidates (missing: [], not candidates: ['b'])"),
    ("weights-not-positive", "  - {name: p, strategy: weighted, candidates: [a], weights: {a: 0}}\n",
     "policies[0].weights.a (line 9)", "Input should be greater than 0"),
    ("weights-without-weighted", "  - {name: p, strategy: cheapest, candidates: [a], weights: {a: 1}}\n",
     "policies[0] (line 9)", "weights and sticky apply only to strategy 'weighted'"),
    ("sticky-without-weighted", "  - {name: p, candidates: [a], sticky: user}\n",
     "policies[0] (line 9)", "weights and sticky apply only to strategy 'weighted'"),
    ("sticky-unknown", "  - {name: p, strategy: weighted, candidates: [a], weights: {a: 1}, sticky: ip}\n",
     "policies[0].sticky (line 9)", "Input should be 'none', 'user' or 'key'"),
    ("cascade-without-cascade", "  - {name: p, strategy: cheapest, candidates: [a], cascade: {json: false}}\n",
     "policies[0] (line 9)", "cascade settings apply only to strategy 'cascade'"),
    ("cascade-bad-regex", "  - {name: p, strategy: cascade, candidates: [a, b], cascade: {regex: '(unclosed'}}\n",
     "policies[0].cascade.regex (line 9)",
     "not a valid regular expression: missing ), unterminated subpattern at position 0"),
    ("cascade-positive-logprob",
     "  - {name: p, strategy: cascade, candidates: [a], cascade: {min_mean_logprob: 0.5}}\n",
     "policies[0].cascade.min_mean_logprob (line 9)", "Input should be less than or equal to 0"),
    ("cascade-stream", "  - {name: p, strategy: cascade, candidates: [a], cascade: {stream: live}}\n",
     "policies[0].cascade.stream (line 9)", "Input should be 'buffer' or 'off'"),
    ("cascade-unknown-check", "  - {name: p, strategy: cascade, candidates: [a], cascade: {jsonn: true}}\n",
     "policies[0].cascade.jsonn (line 9)", "unknown key; check its spelling against docs/configuration.md"),
    ("on-unmet", "  - {name: p, candidates: [a], on_unmet: fail}\n",
     "policies[0].on_unmet (line 9)", "Input should be 'best_effort' or 'reject'"),
    ("strategy", "  - {name: p, strategy: cheapest-first, candidates: [a]}\n",
     "policies[0].strategy (line 9)",
     "unknown strategy; input should be 'ordered', 'weighted', 'cheapest', 'fastest', 'cascade' or 'learned'"),
    ("learned-no-router", "  - {name: p, strategy: learned, candidates: [a, b], require: {min_quality: 0.9}}\n",
     "policies[0] (line 9)",
     "strategy 'learned' needs router: <artifact folder> and two or more candidates"),
    ("learned-one-candidate", "  - {name: p, strategy: learned, router: r, candidates: [a], max_share: 0.2}\n",
     "policies[0] (line 9)",
     "strategy 'learned' needs router: <artifact folder> and two or more candidates"),
    ("learned-no-target", "  - {name: p, strategy: learned, router: r, candidates: [a, b]}\n",
     "policies[0] (line 9)",
     "strategy 'learned' needs require.min_quality (a quality floor) or max_share (a cost target), one of them"),
    ("learned-two-targets", "  - {name: p, strategy: learned, router: r, candidates: [a, b], max_share: 0.2, "
     "require: {min_quality: 0.9}}\n", "policies[0] (line 9)",
     "strategy 'learned' needs require.min_quality (a quality floor) or max_share (a cost target), one of them"),
    ("router-not-learned", "  - {name: p, strategy: cheapest, router: r, candidates: [a, b]}\n",
     "policies[0] (line 9)", "router and max_share apply only to strategy 'learned'"),
]


@pytest.mark.parametrize(("policies", "where", "expected"), [row[1:] for row in INVALID_POLICIES],
                         ids=[row[0] for row in INVALID_POLICIES])
def test_invalid_policy_settings(policies: str, where: str, expected: str) -> None:
    assert problems(HEAD + policies) == [(where, expected)]


def test_weights_are_relative_and_follow_the_candidates_order() -> None:
    tbl = load("""\
  - {name: ninety, strategy: weighted, candidates: [a, b], weights: {b: 10, a: 90}}
  - {name: nine, strategy: weighted, candidates: [a, b], weights: {a: 9, b: 1}, sticky: key}
""")
    ninety, nine = tbl.policies
    assert ninety.weights == pytest.approx((0.9, 0.1))
    assert nine.weights == pytest.approx(ninety.weights)
    assert (ninety.sticky, nine.sticky) == ("none", "key")


def test_a_cascade_without_settings_gets_the_default_checks() -> None:
    tbl = load("""\
  - {name: c, strategy: cascade, candidates: [a, b]}
  - {name: o, candidates: [a]}
""")
    c, o = tbl.policies
    assert c.cascade == schema.Cascade.model_validate({})
    assert c.cascade is not None
    assert (c.cascade.check_json, c.cascade.refusal, c.cascade.regex, c.cascade.min_mean_logprob,
            c.cascade.stream) == (True, True, None, None, "buffer")
    assert c.cascade_regex is None
    assert (o.cascade, o.cascade_regex) == (None, None)


def test_a_cascade_regex_is_compiled_at_load() -> None:
    tbl = load("""  - {name: c, strategy: cascade, candidates: [a, b], cascade: {regex: '"id"\\s*:', json: false}}\n""")
    c = tbl.policies[0]
    assert c.cascade_regex is not None
    assert c.cascade_regex.search('{"id" : 1}') is not None
    assert c.cascade is not None and c.cascade.check_json is False


@pytest.mark.parametrize(("spec", "needs"), [
    ("{name: p, candidates: [a]}", False),
    ("{name: p, candidates: [a], require: {min_quality: 0.5}}", False),
    ("{name: p, strategy: weighted, candidates: [a], weights: {a: 1}}", False),
    ("{name: p, strategy: cheapest, candidates: [a]}", True),
    ("{name: p, strategy: fastest, candidates: [a]}", True),
    ("{name: p, strategy: cascade, candidates: [a]}", True),
    ("{name: p, candidates: [a], require: {max_cost_usd: 1}}", True),
    ("{name: p, candidates: [a], require: {p95_latency_ms: 1}}", True),
    ("{name: p, candidates: [a], require: {min_context: 1}}", True),
    ("{name: p, match: {min_prompt_tokens: 1}, candidates: [a]}", True),
    ("{name: p, match: {max_prompt_tokens: 1}, candidates: [a]}", True),
])
def test_prompt_tokens_are_counted_only_when_a_policy_needs_them(spec: str, needs: bool) -> None:
    assert load(f"  - {spec}\n").policies[0].needs_tokens is needs


# -- prices ------------------------------------------------------------------------------------------


def models(spec: str) -> RoutingTable:
    return load_text(HEAD.replace("  a: {backend: local}\n  b: {backend: local}\n", spec).replace("policies:\n", ""))


def test_price_and_hourly_together_are_rejected() -> None:
    text = HEAD.replace("  a: {backend: local}\n", "  a: {backend: local, price: {input: 1, output: 2},\n"
                        "      hourly: {usd_per_hour: 1, tokens_per_s: 10}}\n").replace("policies:\n", "")
    assert problems(text) == [("models.a (line 6)", "give price or hourly, not both")]


@pytest.mark.parametrize(("hourly", "per_in", "per_out"), [
    # usd_per_hour / 3600 / tokens_per_s per output token; input at 10 x tokens_per_s unless given
    ("{usd_per_hour: 1.20, tokens_per_s: 400}", 1.20 / 3600 / 4000, 1.20 / 3600 / 400),
    ("{usd_per_hour: 3.6, tokens_per_s: 1000, input_tokens_per_s: 5000}", 3.6 / 3600 / 5000, 1e-6),
    ("{usd_per_hour: 0, tokens_per_s: 50}", 0.0, 0.0),
])
def test_hourly_becomes_the_documented_per_token_price(hourly: str, per_in: float, per_out: float) -> None:
    m = models(f"  a: {{backend: local, hourly: {hourly}}}\n").models["a"]
    assert m.input_usd_per_token == pytest.approx(per_in)
    assert m.output_usd_per_token == pytest.approx(per_out)
    assert m.price_source == "hourly"


def test_support_lora_example_rent_per_million_tokens() -> None:
    # policies/support-lora.yaml: a 1.20 USD/hour GPU at 400 tokens/s is 0.83 USD per 1M output tokens.
    m = models("  a: {backend: local, hourly: {usd_per_hour: 1.20, tokens_per_s: 400}}\n").models["a"]
    assert m.output_usd_per_token is not None and m.input_usd_per_token is not None
    assert round(m.output_usd_per_token * 1e6, 4) == 0.8333
    assert round(m.input_usd_per_token * 1e6, 4) == 0.0833


def test_config_prices_are_per_million_tokens() -> None:
    m = models("  a: {backend: local, price: {input: 0.15, output: 0.6}}\n").models["a"]
    assert m.input_usd_per_token == pytest.approx(1.5e-7)
    assert m.output_usd_per_token == pytest.approx(6e-7)
    assert m.price_source == "config"


def test_where_each_price_and_window_comes_from() -> None:
    tbl = models("""\
  configured: {backend: hosted, name: gpt-4o-mini, price: {input: 1, output: 1}}
  rented:     {backend: local, hourly: {usd_per_hour: 1, tokens_per_s: 10}}
  mapped:     {backend: hosted, name: gpt-4o-mini}
  windowed:   {backend: hosted, name: gpt-4o-mini, context_window: 4096}
  via-litellm: {backend: claude, name: gpt-4o-mini}
  self-hosted: {backend: local, name: gpt-4o-mini}
  unknown:    {backend: hosted, name: not-in-any-cost-map}
""")
    got = {n: (m.price_source, m.context_window) for n, m in tbl.models.items()}
    assert got == {
        "configured": ("config", 128000),  # the config's price, the cost map's window
        "rented": ("hourly", None),
        "mapped": ("cost_map", 128000),
        "windowed": ("cost_map", 4096),  # the config's window wins
        "via-litellm": ("cost_map", 128000),  # anthropic/gpt-4o-mini is not in the map: the bare name is
        "self-hosted": (None, None),  # a vLLM model is never looked up: its name says nothing about its cost
        "unknown": (None, None),
    }
    mapped, entry = tbl.models["mapped"], costmap.lookup("gpt-4o-mini")
    assert entry is not None
    assert (mapped.input_usd_per_token, mapped.output_usd_per_token) == (entry.input_usd_per_token,
                                                                         entry.output_usd_per_token)
    assert sorted(w for w in tbl.warnings if "no price" in w) == [
        "model 'self-hosted': no price in the config or the cost map; cost-based routing ranks it last",
        "model 'unknown': no price in the config or the cost map; cost-based routing ranks it last",
    ]
