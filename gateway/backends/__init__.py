"""Backends: build one per configured backend, by type."""

from __future__ import annotations

from gateway.backends.base import Attempt, Backend, Operation, Reply, ReplyStream
from gateway.backends.litellm import LitellmBackend
from gateway.backends.openai import OpenAIBackend
from gateway.backends.replica import Replica
from gateway.backends.vllm import VllmBackend, VllmHooks
from gateway.config import schema


def build_backend(name: str, spec: schema.Backend, hooks: VllmHooks | None = None) -> Backend:
    if isinstance(spec, schema.LitellmBackend):
        return LitellmBackend(name, spec)
    if isinstance(spec, schema.VllmBackend):
        return VllmBackend(name, spec, hooks)
    return OpenAIBackend(name, spec)


__all__ = ["Attempt", "Backend", "Operation", "Replica", "Reply", "ReplyStream", "VllmHooks", "build_backend"]
