"""Process settings from `NANOROUTE_*` environment variables (and the CLI, which overrides them).

Routing lives in the YAML config; these are the few things that describe the process itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+")
"""A browser's Origin: a scheme and a host (and port), nothing after."""
HTTP_URL = re.compile(r"https?://[^/\s?#]+(/\S*)?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NANOROUTE_", extra="ignore", frozen=True)

    config: Path | None = Field(None, description="Config file; the embedded default when unset")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Comma-separated client keys; when empty the API is open"
    )
    admin_key: SecretStr | None = Field(None, description="Enables /admin/* for this Bearer key")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Comma-separated origins browsers may call from (`https://app.example`), or `*`; empty: no CORS"
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger request bodies get 413")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="A larger request line and headers get 431")
    header_timeout_s: float = Field(10.0, gt=0, description="Seconds to send the request line and headers")
    body_timeout_s: float = Field(60.0, gt=0, description="Seconds to send the body, from the end of the headers")
    keep_alive_s: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection is kept open")
    max_connections: int = Field(2048, ge=1, description="Open connections per process; more get 503")
    log_level: str = "info"
    access_log: bool = Field(True, description="One JSON line per request on stderr")
    exact_tokens: bool = Field(True, description="Count prompt tokens with tiktoken where available")
    reload_interval_s: float = Field(2.0, ge=0, description="How often the config file is checked; 0 turns it off")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Also serve /metrics on this port")
    metrics_on_api: bool = Field(True, description="Serve /metrics on the API port too; false: on METRICS_PORT only")
    metrics: bool = Field(True, description="Count requests in the Prometheus metrics (off only to measure their cost)")
    data_dir: Path = Field(Path(".nanoroute"), description="Where the gateway keeps data: captures, datasets, adapters")
    store_path: Path | None = Field(None, description="The embedded store's SQLite file; default DATA_DIR/state.db")
    redis_url: SecretStr | None = Field(
        None, description="redis://[:password@]host:port/db (rediss:// for TLS): keep the store in Redis, shared by "
        "every replica, instead of the SQLite file"
    )
    responses_store: bool = Field(True, description="Keep Responses API answers for `previous_response_id`")
    responses_ttl_s: float = Field(30 * 86400, gt=0, description="How long a stored Responses API answer is kept")
    capture_dir: Path | None = Field(None, description="Captures and feedback; default DATA_DIR/captures")
    capture_sink: str = Field("local", description="`local` (JSONL files), or `package.module:factory` for another")
    capture_file_bytes: int = Field(64 << 20, ge=1024, description="A capture file is closed past this size")
    capture_max_bytes: int = Field(1 << 30, ge=1024, description="Each file set's cap; the oldest files go first")
    capture_queue: int = Field(1024, ge=1, description="Records waiting to be written; more are dropped and counted")
    capture_queue_bytes: int = Field(64 << 20, ge=1024,
                                     description="Bytes the records waiting to be written may hold; more are dropped")
    console: bool = Field(True, description="Serve the operators' console at /ui (only with NANOROUTE_ADMIN_KEY)")
    console_step_s: float = Field(10.0, ge=0.1, le=3600,
                                  description="Seconds between two points of the console's series (360 are kept)")
    prometheus_url: SecretStr | None = Field(
        None, description="http(s)://host:port of a Prometheus that scrapes every replica: the console's figures "
        "are then cluster-wide, read from it, rather than this pod's own"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("admin_key", "redis_url", "prometheus_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not HTTP_URL.fullmatch(value.get_secret_value()):
            raise ValueError("must be an http:// or https:// URL, such as http://prometheus:9090")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, tuple | list):
            return value  # pydantic says what is wrong with it
        origins = tuple(o.strip().lower() if isinstance(o, str) else o for o in value)
        for origin in origins:
            if origin and origin != "*" and not (isinstance(origin, str) and ORIGIN.fullmatch(origin)):
                raise ValueError(f"{origin!r} is not an origin: `*`, or scheme://host[:port] with no path "
                                 "(`https://app.example`, `http://localhost:3000`)")
        return tuple(o for o in origins if o)

    @property
    def config_path(self) -> Path:
        return self.config if self.config is not None else DEFAULT_CONFIG

    @property
    def capture_path(self) -> Path:
        return self.capture_dir if self.capture_dir is not None else self.data_dir / "captures"

    @property
    def store_file(self) -> Path:
        return self.store_path if self.store_path is not None else self.data_dir / "state.db"
