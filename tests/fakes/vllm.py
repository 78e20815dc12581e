"""A fake vLLM server: the fake OpenAI upstream plus vLLM's LoRA adapter API and its own metrics.

What it adds to `FakeUpstream`, the way vLLM (0.32, CPU build) behaves:

- `GET /v1/models`: the base model, and each loaded adapter with `"parent": <base>`.
- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`: 200 when `lora_path` is an existing folder
  (after `load_delay_s`), 404 "Loading lora X failed: No adapter found for ..." otherwise, 400 when the
  name is loaded already; `POST /v1/unload_lora_adapter {"lora_name"}`: 200, or 404 when not loaded.
- Requests for a model that is neither the base nor a loaded adapter: 404 "The model `X` does not exist.".
- `GET /metrics`: `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`,
  `vllm:request_success_total` and `process_start_time_seconds`, from the fields of the same names.
- `restart()`: forgets every adapter and changes the process start time, as a restarted server would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.upstream import FakeUpstream, Seen


@dataclass
class FakeVllm(FakeUpstream):
    adapters: dict[str, str] = field(default_factory=dict)
    """Loaded adapters: name -> path."""
    load_delay_s: float = 0.0
    load_calls: list[str] = field(default_factory=list)
    running: int = 0
    kv_cache: float = 0.0
    finished: int = 0
    started_at: float = field(default_factory=time.time)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        return app

    def restart(self) -> None:
        self.adapters.clear()
        self.started_at += 1.0

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": self.name, "object": "model", "root": "/models/base", "parent": None}]
        data += [{"id": n, "object": "model", "root": p, "parent": self.name} for n, p in self.adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        m = f'model_name="{self.name}"'
        text = "\n".join([
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{m}}} {float(self.waiting)}",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{m}}} {float(self.running)}",
            "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{m}}} {self.kv_cache}",
            "# TYPE vllm:request_success counter",
            f'vllm:request_success_total{{finished_reason="stop",{m}}} {float(self.finished)}',
            "# TYPE process_start_time_seconds gauge", f"process_start_time_seconds {self.started_at}", ""])
        return web.Response(text=text)

    async def _load(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        self.load_calls.append(name)
        if self.load_delay_s:
            await asyncio.sleep(self.load_delay_s)
        if name in self.adapters:
            return _error(400, f"The lora adapter '{name}' has already been loaded. If you want to load the "
                               "adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
        if not path or not os.path.isdir(path):
            return _error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        self.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if name not in self.adapters:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.adapters[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        model = body.get("model")
        if model != self.name and model not in self.adapters:
            self.seen.append(Seen(request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body))
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        self.finished += 1
        return await super()._handle_parsed(request, body)


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}},
                             status=status)
