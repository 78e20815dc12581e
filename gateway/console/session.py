"""The console's sessions: a signed cookie, a CSRF token per session, logout, and a brake on guessing the key.

- **Login** compares the key typed in with NANOROUTE_ADMIN_KEY in constant time (`KeyCheck.check_admin`, as
  the admin API does), after `Throttle` has let the address try: 10 failures in 5 minutes from one address,
  and it waits.
- **The cookie** is `<expires>.<session id>.<MAC>`: when it stops being valid (Unix seconds), 16 random bytes,
  and an HMAC-SHA256 of the two under a key derived from the admin key (scrypt, once per process). Every worker
  and replica that has the admin key checks it without shared state; changing the admin key ends every session.
  Neither the key nor anything from which it is cheap to guess is in the cookie or a page. It is `HttpOnly`,
  `SameSite=Strict`, `Path=/ui`, `Secure` when the browser reached the gateway over https, and lasts
  `SESSION_S`.
- **Logout** forgets the session everywhere: its id is written to the store (the SQLite file a host's workers
  share, or Redis for every replica) until the cookie would have expired, and each request of a session looks
  there. While the store cannot be read, a session is judged by its cookie alone (and the logouts this process
  saw): the console stays usable during an outage, at the price of a cookie already logged out elsewhere
  being accepted for that long.
- **CSRF**: every action is a POST that must carry the session's token (`csrf_token`: an HMAC of the session
  id, in a hidden field, or the `X-CSRF-Token` header that console.js adds to htmx requests) and, when the
  browser sends one, an `Origin` of the page's own host. The cookie's `SameSite=Strict` already keeps other
  sites' requests from carrying it; the token holds where it does not (an old browser, a sibling subdomain).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.errors import StorageUnavailable
from gateway.store.base import Store

log = logging.getLogger("nanoroute")

COOKIE = "nanoroute_console"
PATH = "/ui"
SESSION_S = 12 * 3600
"""How long a session lasts from its login, whatever is done with it."""
NAMESPACE = "console-logouts"
"""The store's namespace: the ids of sessions logged out before their cookie expires."""
SALT = b"nanoroute console sessions v1"
"""Separates the session key from any other use of the admin key."""


def session_key(admin_key: str) -> bytes:
    """The key that signs sessions. scrypt makes each guess of the admin key from a stolen cookie cost
    about 16 MiB and tens of milliseconds, on top of the admin key's own length (16 characters or more)."""
    return hashlib.scrypt(admin_key.encode(), salt=SALT, n=1 << 14, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    expires: int
    csrf: str
    """The token every action of this session must carry."""


class Sessions:
    """Issue, check and end the console's sessions, with one process's key and the gateway's store."""

    def __init__(self, key: bytes, store: Store, session_s: int = SESSION_S) -> None:
        self._key = key
        self._store = store
        self.session_s = session_s
        self._ended: dict[str, int] = {}
        """Sessions logged out through this process: id -> when the cookie expires (checked without the store)."""
        self._complained = 0.0

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, ".".join(parts).encode(), hashlib.sha256).hexdigest()

    def _session(self, sid: str, expires: int) -> Session:
        return Session(sid, expires, self._mac("csrf", sid))

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie's value."""
        expires = int(now if now is not None else time.time()) + self.session_s
        sid = secrets.token_hex(16)
        return self._session(sid, expires), f"{expires}.{sid}.{self._mac(str(expires), sid)}"

    async def check(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None when it is missing, forged, expired or logged out."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, sid, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(expires, sid).encode()):
            return None
        now = now if now is not None else time.time()
        if int(expires) <= now or sid in self._ended:
            return None
        try:
            if await self._store.get(NAMESPACE, sid) is not None:
                return None
        except StorageUnavailable as exc:
            if now - self._complained > 60:
                self._complained = now
                log.warning("console: the store cannot be read (%s): sessions logged out elsewhere are not seen", exc)
        return self._session(sid, int(expires))

    async def end(self, session: Session, now: float | None = None) -> None:
        """Log a session out, here at once and everywhere once the store has it."""
        now = now if now is not None else time.time()
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.id] = session.expires
        try:
            await self._store.put(NAMESPACE, session.id, b"1", max(1.0, session.expires - now))
        except StorageUnavailable as exc:
            log.warning("console: logout of a session holds in this process only: %s", exc)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), session.csrf.encode())


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Whether a POST comes from a page of this host: its `Origin` (or, where a browser sent none, its
    `Referer`) names the `Host` it was sent to. A request with neither (not a browser's) passes: the CSRF
    token is what it still needs. The scheme is not compared: behind a proxy that ends TLS, the browser's
    https origin reaches the gateway as plain http."""
    source = origin if origin not in (None, "null") else referer
    if source is None:
        return origin is None
    return host is not None and urlsplit(source).netloc.lower() == host.lower()


class Throttle:
    """Failed logins per client address: `limit` failures within `window_s` and the address waits until the
    oldest is that old. At most `addresses` addresses are remembered (the least recent go first), so a flood
    of addresses cannot grow it."""

    def __init__(self, limit: int = 10, window_s: float = 300.0, addresses: int = 4096) -> None:
        self.limit, self.window_s, self.addresses = limit, window_s, addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_s(self, address: str, now: float) -> float:
        """Seconds the address must wait before it may try again (0: it may now)."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if len(failures) < self.limit:
            return 0.0
        return failures[0] + self.window_s - now

    def failed(self, address: str, now: float) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=self.limit)
        failures.append(now)
        self._failures[address] = failures
        while len(self._failures) > self.addresses:
            self._failures.popitem(last=False)
