"""Run the gateway under uvicorn (uvloop + httptools), one process or several workers.

uvicorn's options, which say how connections are treated, come from `gateway.serving`, shared with the tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from gateway import accesslog
from gateway.app import Gateway, create_app
from gateway.config.loader import load_file
from gateway.serving import uvicorn_options
from gateway.settings import Settings


def app_factory() -> Gateway:
    """Entry point for each worker process; reads the same NANOROUTE_* environment as the parent."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accesslog.configure("INFO" if settings.access_log else "WARNING")


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings)
    options = dict(host=settings.host, port=settings.port, loop="uvloop", log_level=settings.log_level,
                   **uvicorn_options(settings))
    if settings.workers > 1:
        load_file(settings.config_path)  # fail here, once, rather than in every worker
        _multiprocess_metrics_dir()
        uvicorn.run("gateway.server:app_factory", factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


def _multiprocess_metrics_dir() -> None:
    """Workers share their metrics through files in PROMETHEUS_MULTIPROC_DIR; start from an empty one,
    since files left by an earlier run would be added to this run's counters."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nanoroute-metrics-")
