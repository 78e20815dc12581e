"""Run real servers (fake upstreams, the gateway under uvicorn) on loopback in a background event loop.

Tests talk to them over real sockets, from the test thread, with the official `openai` SDK or httpx.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from aiohttp import web

from gateway.app import Gateway, create_app
from gateway.serving import uvicorn_options
from gateway.settings import Settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.upstream import FakeUpstream
from tests.fakes.vllm import FakeVllm

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    """An asyncio event loop in a daemon thread; `run(coro)` executes a coroutine there and waits.

    `submit(coro)` starts one without waiting; `stop()` waits for every submitted one (and raises the
    first failure) before it stops the loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._submitted: list[Future[Any]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._submitted.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        try:
            for future in self._submitted:
                future.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class Servers:
    """Starts fake upstreams and gateways on one loop thread and stops them all at the end."""

    def __init__(self, loop: LoopThread, tmp: Path) -> None:
        self.loop = loop
        self.tmp = tmp
        self._runners: list[web.AppRunner] = []
        self._gateways: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    def upstream(self, name: str = "fake", **kwargs: Any) -> FakeUpstream:
        fake = FakeUpstream(name=name, **kwargs)
        fake.port = self._serve(fake.app())
        return fake

    def vllm(self, name: str = "base-model", **kwargs: Any) -> FakeVllm:
        """A fake vLLM server (adapters API, its metrics) serving base model `name`."""
        fake = FakeVllm(name=name, **kwargs)
        fake.port = self._serve(fake.app())
        return fake

    def anthropic(self, **kwargs: Any) -> FakeAnthropic:
        """A fake Anthropic Messages API; its `url` is the API base (without /v1)."""
        fake = FakeAnthropic(**kwargs)
        fake.port = self._serve(fake.app())
        return fake

    def serve(self, app: web.Application) -> int:
        """Serve any aiohttp app (an upstream that misbehaves in a way of its own) on a free loopback port."""
        return self._serve(app)

    def _serve(self, app: web.Application) -> int:
        """Serve an aiohttp app on a free loopback port (stopped in `close`); returns the port."""

        async def start() -> int:
            # handler_cancellation: a handler whose client went away is cancelled, as in a real server,
            # so a fake's `cancelled` counts requests the gateway abandoned.
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        return self.loop.run(start())

    def gateway(self, config: str, **settings: Any) -> str:
        """Start a gateway on `config` (YAML text); returns its base URL (with /v1)."""
        path = self.tmp / f"config-{len(self._gateways)}.yaml"
        path.write_text(config)
        port = free_port()
        # A data folder of its own (the store: rollouts, keys, counters), unless the test shares one on purpose.
        settings.setdefault("data_dir", self.tmp / f"data-{len(self._gateways)}")
        resolved = Settings(config=path, port=port, **settings)
        server = uvicorn.Server(uvicorn.Config(create_app(resolved), host="127.0.0.1", port=port, loop="none",
                                               log_level="warning", **uvicorn_options(resolved)))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

        async def start() -> asyncio.Task[None]:
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            return task

        self._gateways.append((server, self.loop.run(start())))
        return f"http://127.0.0.1:{port}/v1"

    def app_of(self, index: int = -1) -> Gateway:
        app = self._gateways[index][0].config.app
        assert isinstance(app, Gateway)
        return app

    def close(self) -> None:
        """Stop every server, in the background: uvicorn's graceful shutdown polls (about 0.2 s), and a
        test need not wait for it. The loop thread waits for all of them before it stops."""
        gateways, runners = list(self._gateways), list(self._runners)

        async def stop() -> None:
            for server, _ in gateways:
                server.should_exit = True
            await asyncio.wait_for(asyncio.gather(*(task for _, task in gateways)), 10)
            for runner in runners:
                await runner.cleanup()

        self.loop.submit(stop())
