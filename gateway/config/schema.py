"""The config file's schema: strict models that reject unknown keys and wrong types.

Phase one of two: this only says what a well-formed file looks like. `loader.py` then resolves the
names it references into a frozen `RoutingTable`, so a bad reference also fails at load.
Every key here is documented in docs/configuration.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


class Timeouts(Strict):
    connect_s: PositiveFloat = 5.0
    total_s: PositiveFloat = 600.0
    ttft_s: PositiveFloat = 60.0
    """Streams: from sending the request to the upstream's first content (docs/reliability.md)."""
    idle_s: PositiveFloat = 30.0
    """Streams: the longest wait for the next chunk once content flows."""


class Breaker(Strict):
    """Circuit breakers for this backend: one per model and replica, plus one per replica that counts
    only connection failures (passive outlier detection). See docs/reliability.md."""

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    window_s: PositiveFloat = 30.0
    min_requests: Annotated[int, Field(ge=1)] = 20
    cooldown_s: PositiveFloat = 5.0
    max_cooldown_s: PositiveFloat = 120.0
    confirm: bool = True
    """Before failures that one client's requests could cause (5xx answers, timeouts, malformed answers)
    open a model's breaker, ask the model a one-token question of the same kind; open only if that fails
    too. Refused connections, 429s and rejected credentials open it at once."""

    @model_validator(mode="after")
    def _cooldowns(self) -> Breaker:
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be at least cooldown_s")
        return self


class HealthCheck(Strict):
    """Active health checks: GET `path` on every replica every `interval_s`."""

    enabled: bool = True
    path: str | None = None
    """Resolved against the backend URL like a link: `models` is {url}/models, `/health` is the server's
    /health. Default: `/health` for vllm, `models` for openai."""
    interval_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat = 2.0
    failures: Annotated[int, Field(ge=1)] = 2
    """Consecutive failed checks that take a replica out; one passing check brings it back."""
    max_waiting: Annotated[int, Field(ge=0)] | None = None
    """vllm only: with each check, read `vllm:num_requests_waiting` from the replica's /metrics; while it
    is above this, the replica takes no new requests (they spill over) instead of growing its queue."""


class _HttpBackend(Strict):
    api_key_env: str | None = None
    api_key_file: Path | None = None
    headers: dict[str, str] = {}
    timeouts: Timeouts = Timeouts()
    max_connections: Annotated[int, Field(ge=1, le=65536)] = 512
    breaker: Breaker = Breaker()
    health: HealthCheck | None = None
    """Unset: on for vllm (path `/health`), off for openai."""
    stream_usage: bool = True
    """Ask for usage in streams (`stream_options.include_usage`) when the client did not; turn off for a
    server that rejects `stream_options` (its streams then count no tokens)."""
    max_response_bytes: Annotated[int, Field(ge=1024)] = 64 << 20
    """The largest JSON answer read from it (streams are relayed as they come, never held whole); a larger
    one fails the attempt as malformed."""
    native: list[Literal["responses"]] | None = None
    """The APIs beyond chat completions the server speaks itself: a request that came in by one goes to it
    as the client sent it. Unset: `[responses]` for api.openai.com, none for other servers (docs/api.md)."""


class OpenAIBackend(_HttpBackend):
    """Any server that speaks OpenAI's HTTP API (OpenAI, Together, Groq, another gateway...)."""

    type: Literal["openai"]
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("health")
    @classmethod
    def _no_queue_signal(cls, value: HealthCheck | None) -> HealthCheck | None:
        if value is not None and value.max_waiting is not None:
            raise ValueError("max_waiting reads vLLM's own metrics: it applies to type vllm only")
        return value


class AzureBackend(OpenAIBackend):
    """Azure OpenAI: deployments addressed by name (the model's `name`) and an API version; the key goes
    in the `api-key` header."""

    type: Literal["azure"]  # type: ignore[assignment]
    api_version: Annotated[str, Field(min_length=1)] = "2024-10-21"


class VllmBackend(_HttpBackend):
    """One or more vLLM OpenAI-compatible servers (replicas) serving the same models."""

    type: Literal["vllm"]
    urls: Annotated[list[str], Field(min_length=1)]
    poll_interval_s: PositiveFloat = 2.0
    """How often each replica's /v1/models (what it serves, adapters included) and /metrics (its queue,
    running requests and KV-cache use) are read. See docs/adapters.md."""
    max_loras: Annotated[int, Field(ge=1)] | None = None
    """vLLM's `--max-loras`: adapters a replica serves at once. With it, an adapter is loaded on a replica
    with room before one without; unset, every replica counts as having room."""
    adapter_load_timeout_s: PositiveFloat = 60.0

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        urls = [_http_url(u) for u in value]
        if len(set(urls)) != len(urls):
            raise ValueError("replica URLs must be distinct")
        return urls


class LitellmBackend(Strict):
    """A hosted provider with its own protocol (Anthropic, Gemini, Bedrock...), through litellm."""

    type: Literal["litellm"]
    provider: Name
    api_key_env: str | None = None
    api_key_file: Path | None = None
    url: str | None = None
    settings: dict[str, Any] = {}
    timeouts: Timeouts = Timeouts()
    breaker: Breaker = Breaker()
    native: list[Literal["messages"]] | None = None
    """Anthropic's Messages API, spoken by the provider itself: a request that came in by it goes to
    Anthropic as the client sent it (thinking blocks, signatures and server tools included) rather than
    through litellm's translation. Unset: `[messages]` for provider `anthropic`, none for others."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _native_is_anthropic(self) -> LitellmBackend:
        if self.native and self.provider != "anthropic":
            raise ValueError("native: [messages] is for provider anthropic only")
        return self


Backend = Annotated[OpenAIBackend | AzureBackend | VllmBackend | LitellmBackend, Field(discriminator="type")]


class Price(Strict):
    """USD per one million tokens."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]


class Hourly(Strict):
    """A self-hosted model's cost as rent: USD per hour at a sustained throughput.

    Turned into a per-token price: usd_per_hour / 3600 / tokens_per_s for output tokens, and the same
    over `input_tokens_per_s` (default ten times `tokens_per_s`: prefill is much faster than decode).
    """

    usd_per_hour: Annotated[float, Field(ge=0)]
    tokens_per_s: PositiveFloat
    input_tokens_per_s: PositiveFloat | None = None


class Latency(Strict):
    """A prior for a model's speed, used until measurements replace it."""

    ttft_ms: PositiveFloat
    tokens_per_s: PositiveFloat


class Model(Strict):
    backend: Name
    name: Name | None = None
    adapter: Name | None = None
    """vllm only: the LoRA adapter this model is, by its manifest's name (`adapters_dir`/NAME.yaml). The
    gateway loads it on the replicas; `name` defaults to it, and `quality` to the manifest's scores."""
    context_window: Annotated[int, Field(ge=1)] | None = None
    price: Price | None = None
    hourly: Hourly | None = None
    quality: dict[Name, Score] = {}
    latency: Latency | None = None
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    """Requests in flight to this model (per gateway process) beyond which new ones spill over to the
    next model instead of queueing."""

    @model_validator(mode="after")
    def _one_cost(self) -> Model:
        if self.price is not None and self.hourly is not None:
            raise ValueError("give price or hourly, not both")
        return self


class Match(Strict):
    """All given conditions must hold; an empty match is a catch-all."""

    model: list[str] | None = None
    task: list[Name] | None = None
    key: list[Name] | None = None
    """Client key names (from NANOROUTE_API_KEYS `name=key` entries) or key ids."""
    has_tools: bool | None = None
    json_mode: bool | None = None
    stream: bool | None = None
    min_prompt_tokens: Annotated[int, Field(ge=0)] | None = None
    max_prompt_tokens: Annotated[int, Field(ge=0)] | None = None

    @field_validator("model", "task", "key", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Require(Strict):
    min_quality: Score | None = None
    p95_latency_ms: PositiveFloat | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    min_context: Annotated[int, Field(ge=1)] | None = None


Strategy = Literal["ordered", "weighted", "cheapest", "fastest", "cascade", "learned"]


class Cascade(Strict):
    """What makes an answer good enough to stop the cascade; a failed check escalates to the next model."""

    check_json: bool = Field(True, alias="json")
    """`json`: when the request asks for `response_format` json_object or json_schema, the answer must parse as JSON."""
    refusal: bool = True
    """Escalate an empty answer, a `refusal`, or one that opens with a stock refusal phrase."""
    regex: str | None = None
    """The answer must match this regular expression (searched, not anchored)."""
    min_mean_logprob: Annotated[float, Field(le=0)] | None = None
    """The mean token log-probability must reach this (the gateway asks the upstream for logprobs)."""
    stream: Literal["buffer", "off"] = "buffer"
    """Streams: `buffer` holds a cascading model's stream until it is checked; `off` streams the first model."""

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class Retries(Strict):
    """Retries on the same model, for errors a retry may fix (docs/reliability.md)."""

    max: Annotated[int, Field(ge=0, le=10)] = 0
    backoff_ms: Annotated[float, Field(ge=0)] = 100.0
    max_backoff_ms: Annotated[float, Field(ge=0)] = 2000.0
    respect_retry_after_max_s: Annotated[float, Field(ge=0)] = 5.0
    """A 429's Retry-After up to this long is waited out and retried; a longer one moves on at once."""


class Reliability(Strict):
    """How a policy's attempt chain behaves under failure (docs/reliability.md)."""

    deadline_ms: PositiveFloat = 600_000.0
    """One deadline for all attempts of a request together; a client's `timeout` may only shorten it."""
    retries: Retries = Retries()
    on_all_open: Literal["reject", "least_recently_failed"] = "reject"
    """When every model is open: answer 503 with Retry-After at once, or try the least recently failed one."""


class CapturePolicy(Strict):
    """Record a sample of this policy's chat requests with the answers that served them (docs/configuration.md)."""

    sample: Annotated[float, Field(ge=0.0, le=1.0)]
    """The share of requests recorded, 0..1."""
    tasks: Annotated[list[Name], Field(min_length=1)] | None = None
    """Only requests of these tasks; every request the policy routes when unset."""


class Rollout(Strict):
    """A model earning its way into a policy's traffic: shadow, then canary, then primary, on measured
    agreement with the answers the policy would have served (docs/flywheel.md)."""

    model: Name
    """The catalog model rolled out (typically an adapter); not one of the policy's candidates."""
    stage: Literal["shadow", "canary", "primary"] = "shadow"
    """Where it starts (and where a new config puts it); the gateway moves it on from there."""
    evaluator: Literal["exact", "json_fields", "judge"] = "exact"
    """How its answer is scored against the one the policy served: the whole label, JSON fields, or (free
    text) a `judge` model's PASS or FAIL."""
    fields: list[str] = []
    """`json_fields`: the fields compared (default: every field of the served answer)."""
    judge: Name | None = None
    """`judge`: the catalog model that grades each answer against the served one (a large hosted model)."""
    shadow_sample: Score = 0.2
    """The share of requests served by the others that are mirrored to it and scored."""
    audit_sample: Score = 0.05
    """Once it serves (canary, primary): the share of its answers checked against the policy's own first
    choice, asked the same question off the request path."""
    min_samples: Annotated[int, Field(ge=1)] = 50
    """Scored answers needed in a stage (or canary step) before the next step, or a step back."""
    window: Annotated[int, Field(ge=1)] = 200
    """The live score is the mean of the last `window` scores of the current stage."""
    canary_steps: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=1)] = [0.1, 0.25, 0.5]
    """Its share of traffic at each canary step, growing."""
    auto: bool = True
    """Move on (and back) by the measurements; false: only an operator moves it (/admin/rollouts)."""
    max_concurrency: Annotated[int, Field(ge=1)] = 4
    """Mirrored requests in flight at once; more are dropped and counted."""

    @model_validator(mode="after")
    def _growing(self) -> Rollout:
        if sorted(self.canary_steps) != self.canary_steps:
            raise ValueError("canary_steps must grow")
        if self.window < self.min_samples:
            raise ValueError("window must hold at least min_samples scores")
        if (self.evaluator == "judge") != (self.judge is not None):
            raise ValueError("evaluator: judge needs a judge model, and a judge model needs evaluator: judge")
        return self


class Policy(Strict):
    name: Name
    match: Match = Match()
    strategy: Strategy = "ordered"
    candidates: Annotated[list[Name], Field(min_length=1)]
    require: Require = Require()
    fallback: list[Name] = []
    on_unmet: Literal["best_effort", "reject"] = "best_effort"
    """When no candidate meets `require`: rank them all anyway, or answer 503."""
    weights: dict[Name, Annotated[float, Field(gt=0)]] | None = None
    """`weighted`: each candidate's share of traffic (relative)."""
    sticky: Literal["none", "user", "key"] = "none"
    """`weighted`: keep a client on one model, by the body's `user` or by client key."""
    cascade: Cascade | None = None
    """`cascade`: the checks; the defaults when omitted."""
    router: str | None = None
    """`learned`: the router artifact's folder (`nanoroute router train --out`), relative to the config file."""
    max_share: Score | None = None
    """`learned`, instead of `require.min_quality`: the share of requests the dearest candidate may take."""
    reliability: Reliability = Reliability()
    capture: CapturePolicy | None = None
    rollout: Rollout | None = None

    @model_validator(mode="after")
    def _capture_tasks(self) -> Policy:
        if self.capture is not None and self.capture.tasks and self.match.task is not None:
            never = [t for t in self.capture.tasks if t not in self.match.task]
            if never:
                raise ValueError(f"capture.tasks names tasks this policy never matches: {never}")
        return self

    @model_validator(mode="after")
    def _rollout(self) -> Policy:
        if self.rollout is not None:
            if self.require.min_quality is None:
                raise ValueError("a rollout needs require.min_quality: the score it must hold to move on")
            if self.rollout.model in self.candidates:
                raise ValueError(f"the rollout's model '{self.rollout.model}' gets traffic through the rollout; "
                                 "it must not be a candidate too")
        return self

    @model_validator(mode="after")
    def _strategy_settings(self) -> Policy:
        if self.strategy == "weighted":
            if not self.weights:
                raise ValueError("strategy 'weighted' needs weights: {model: weight} for its candidates")
            missing = [c for c in self.candidates if c not in self.weights]
            extra = [w for w in self.weights if w not in self.candidates]
            if missing or extra:
                raise ValueError(
                    f"weights must name exactly the candidates (missing: {missing}, not candidates: {extra})")
        elif self.weights is not None or self.sticky != "none":
            raise ValueError("weights and sticky apply only to strategy 'weighted'")
        if self.cascade is not None and self.strategy != "cascade":
            raise ValueError("cascade settings apply only to strategy 'cascade'")
        if self.strategy == "learned":
            if self.router is None or len(self.candidates) < 2:
                raise ValueError("strategy 'learned' needs router: <artifact folder> and two or more candidates")
            if (self.require.min_quality is None) == (self.max_share is None):
                raise ValueError("strategy 'learned' needs require.min_quality (a quality floor) or max_share (a "
                                 "cost target), one of them")
        elif self.router is not None or self.max_share is not None:
            raise ValueError("router and max_share apply only to strategy 'learned'")
        return self


class Pinning(Strict):
    """The `X-Nanoroute-Model` header pins a request to one catalog model, for these client keys only."""

    allow_keys: list[str] = []
    """Key names or ids; `*` allows every key (and, with no keys configured, every client)."""


Builtin = Literal["email", "phone", "key"]
BUILTIN_REDACTIONS: tuple[Builtin, ...] = ("email", "phone", "key")


class Redact(Strict):
    """What is replaced in captured requests and answers before anything is written."""

    builtin: list[Builtin] = list(BUILTIN_REDACTIONS)
    """The built-in patterns: e-mail addresses, phone numbers, secrets (keys, tokens, passwords)."""
    patterns: dict[Name, str] = {}
    """More patterns, by name: regular expressions whose matches become `[REDACTED:name]`."""

    @field_validator("patterns")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern '{name}' is not a valid regular expression: {exc}") from None
            if compiled.match(""):
                raise ValueError(f"pattern '{name}' matches the empty string")
        return value


class Capture(Strict):
    """Gateway-wide capture settings: what policies with `capture` record is cleaned by these."""

    redact: Redact = Redact()


Period = Literal["day", "week", "month", "total"]
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Limits(Strict):
    """Rate limits (a sliding one-minute window) and a cap on requests at once; unset: no limit."""

    rpm: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute."""
    tpm: Annotated[int, Field(ge=1)] | None = None
    """Tokens per minute: the prompt and the output expected (max_tokens when given), corrected once known."""
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    """Requests at once."""


class Budget(Strict):
    """Dollars per period (UTC calendar day, ISO week, calendar month, or in total), reset as each begins."""

    usd: Annotated[float, Field(ge=0)]
    period: Period = "month"


Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                     Field(max_length=32)]


class Team(Strict):
    """A team: its budget and limits cap all its keys together (docs/governance.md)."""

    limits: Limits = Limits()
    budget: Budget | None = None
    metadata: Metadata = {}


class Key(Strict):
    """A client key: what it may use, its team, limits and budget (docs/governance.md). Named here, it is
    one of `NANOROUTE_API_KEYS` (by its name or id), or a key of its own given by `digest` or `secret_file`.
    Unset lists allow everything; an empty list allows nothing."""

    models: list[Name] | None = None
    """The catalog models that may serve its requests, whichever policy routes them."""
    policies: list[Name] | None = None
    """The policies its requests may match; the others are passed over as if they did not match."""
    team: Name | None = None
    limits: Limits = Limits()
    budget: Budget | None = None
    expires_at: AwareDatetime | None = None
    metadata: Metadata = {}
    digest: str | None = None
    """The key itself, as `sha256:<64 hex digits>` of its text: for GitOps, where the secret stays out of the file."""
    secret_file: Path | None = None
    """A file that holds the key (a mounted Kubernetes Secret); read at each load."""

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not DIGEST.fullmatch(value):
            raise ValueError("expected sha256: and 64 lowercase hex digits (`printf %s KEY | sha256sum`)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> Key:
        if self.digest is not None and self.secret_file is not None:
            raise ValueError("give the key by digest or by secret_file, not both")
        return self


class Governance(Strict):
    """Keys, budgets and limits at run time (docs/governance.md)."""

    on_store_error: Literal["allow", "deny"] = "allow"
    """When the store cannot be reached to check a limited key: let its requests through (counted as they
    end, once the store is back) or refuse them with 503."""
    key_labels: bool = False
    """Label the spend and limited metrics by key id (one series per key: for a few hundred keys at most)."""
    ledger: Literal["governed", "all"] = "governed"
    """Which requests the spend ledger records: those of keys with a team, a limit, a budget or made by the
    admin API; or every request."""


class Direct(Strict):
    """Requests that match no policy and name a catalog model go straight to it."""

    enabled: bool = True


class Config(Strict):
    backends: Annotated[dict[Name, Backend], Field(min_length=1)]
    models: Annotated[dict[Name, Model], Field(min_length=1)]
    policies: list[Policy] = []
    keys: dict[Name, Key] = {}
    """Per client key: the models and policies it may use, its team, limits and budget (docs/governance.md)."""
    teams: dict[Name, Team] = {}
    governance: Governance = Governance()
    direct: Direct = Direct()
    pinning: Pinning = Pinning()
    capture: Capture = Capture()
    adapters_dir: Path = Path("adapters")
    """Where adapter manifests are; a relative path is taken from the config file's folder."""
