"""The config file's schema: strict models that reject unknown keys and wrong types.

Phase one of two: this only says what a well-formed file looks like. `loader.py` then resolves the
names it references into a frozen `RoutingTable`, so a bad reference also fails at load.
Every key here is documented in docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class _HttpBackend(Strict):
    api_key_env: str | None = None
    api_key_file: Path | None = None
    headers: dict[str, str] = {}
    timeouts: Timeouts = Timeouts()
    max_connections: Annotated[int, Field(ge=1, le=65536)] = 512


class OpenAIBackend(_HttpBackend):
    """Any server that speaks OpenAI's HTTP API (OpenAI, Together, Groq, another gateway...)."""

    type: Literal["openai"]
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class VllmBackend(_HttpBackend):
    """One or more vLLM OpenAI-compatible servers (replicas) serving the same models."""

    type: Literal["vllm"]
    urls: Annotated[list[str], Field(min_length=1)]

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

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)


Backend = Annotated[OpenAIBackend | VllmBackend | LitellmBackend, Field(discriminator="type")]


class Price(Strict):
    """USD per one million tokens."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]


class Latency(Strict):
    """A prior for a model's speed, used until measurements replace it."""

    ttft_ms: PositiveFloat
    tokens_per_s: PositiveFloat


class Model(Strict):
    backend: Name
    name: Name | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None
    price: Price | None = None
    quality: dict[Name, Score] = {}
    latency: Latency | None = None


class Match(Strict):
    """All given conditions must hold; an empty match is a catch-all."""

    model: list[str] | None = None
    task: list[Name] | None = None

    @field_validator("model", "task", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Require(Strict):
    min_quality: Score | None = None
    p95_latency_ms: PositiveFloat | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    min_context: Annotated[int, Field(ge=1)] | None = None


Strategy = Literal["ordered", "cheapest", "fastest"]


class Policy(Strict):
    name: Name
    match: Match = Match()
    strategy: Strategy = "ordered"
    candidates: Annotated[list[Name], Field(min_length=1)]
    require: Require = Require()
    fallback: list[Name] = []


class Config(Strict):
    backends: Annotated[dict[Name, Backend], Field(min_length=1)]
    models: Annotated[dict[Name, Model], Field(min_length=1)]
    policies: list[Policy] = []
