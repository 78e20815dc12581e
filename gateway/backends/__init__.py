"""Backends: build one per configured backend, by type."""

from __future__ import annotations

from gateway.backends.base import Attempt, Backend, Reply, ReplyStream
from gateway.backends.litellm import LitellmBackend
from gateway.backends.openai import OpenAIBackend
from gateway.backends.vllm import VllmBackend, VllmHooks
from gateway.config import schema


def build_backend(name: str, spec: schema.Backend, hooks: VllmHooks | None = None) -> Backend:
    if isinstance(spec, schema.LitellmBackend):
        return LitellmBackend(name, spec)
    if isinstance(spec, schema.VllmBackend):
        return VllmBackend(name, spec, hooks)
    return OpenAIBackend(name, spec)


__all__ = ["Attempt", "Backend", "Reply", "ReplyStream", "VllmBackend", "VllmHooks", "build_backend"]
