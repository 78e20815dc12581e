"""Run the gateway under uvicorn (uvloop + httptools), one process or several workers."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import Gateway, create_app
from gateway.config.loader import load_file
from gateway.settings import Settings


def app_factory() -> Gateway:
    """Entry point for each worker process; reads the same NANOROUTE_* environment as the parent."""
    return create_app(Settings())


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    if settings.workers > 1:
        load_file(settings.config_path)  # fail here, once, rather than in every worker
        uvicorn.run("gateway.server:app_factory", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
