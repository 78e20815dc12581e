"""One replica of a backend: a base URL, and what the gateway knows of it.

Each backend builds its replicas once (one per URL; a `litellm` backend has one, its provider), and
three owners read and write the same object:

- the **backend**: where a request goes (`prefer`), and for vLLM what the replica serves and how busy it
  is, from its own `/v1/models` and `/metrics` (the poll);
- the **attempt chain**: the gateway's own requests to it now (`in_flight`), counted while an attempt
  or its stream is open;
- the **health checks and breakers** (`reliability/health.py`), which keep their verdicts beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Replica:
    backend: str
    index: int
    """Its position in the backend's `urls` (0 for `url`)."""
    url: str
    in_flight: int = 0
    """The gateway's own requests to it now (this process), counted by the attempt chain."""
    # What vLLM says of itself, read by the vLLM backend's poll.
    reachable: bool = False
    served: dict[str, str | None] | None = None
    """Model ids from its /v1/models, each with its parent (adapters) or None (base models); None until read."""
    loaded: set[str] = field(default_factory=set)
    """Adapters known to be loaded on it."""
    failed_loads: dict[str, float] = field(default_factory=dict)
    """Adapter -> when a load last failed (time.monotonic())."""
    started_at: float | None = None
    """Its process start time, as its metrics say: a change means it restarted."""
    waiting: float = 0.0
    running: float = 0.0
    kv_cache: float = 0.0
    rate: float | None = None
    """Requests finished per second (moving average)."""
    queue_wait_s: float = 0.0
    """The expected wait in its queue: waiting requests over the rate at which they finish."""
    finished: float | None = None
    """Its count of finished requests at the last read, and when that was (for `rate`)."""
    read_at: float = 0.0

    @property
    def load(self) -> float:
        """Requests on it: the gateway's in flight, and those vLLM says it runs or queues."""
        return self.in_flight + self.waiting + self.running
