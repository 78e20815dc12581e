"""How the HTTP server treats connections: uvicorn's options for the gateway, in one place.

`uvicorn_options(settings)` is used by `nanoroute serve` (one worker or several) and by the tests' gateways
alike, so that what the tests exercise is what runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway, less where it listens, its event loop and its log level."""
    return {
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 30,
    }
