"""Public keys of an identity provider, from a JWKS URL or a JWKS file.

The key set is read at start, again every `cache_seconds` (in the background: stale keys keep
working meanwhile), and when a token names a key id (`kid`) the set does not hold, at most once
every `min_refresh_seconds` (a rotated key is picked up at once; a stream of tokens with made-up
ids cannot turn the server into a load generator against the provider). Reads run on a thread
(urllib; the event loop never waits for the provider) and are bounded in time and size.

Only signing keys are kept: `use` absent or "sig", no symmetric (`oct`) keys — an HS256 token
is only ever checked against JWT_SECRET_KEY. A key is used for a token only with the algorithm
the token names, and only when the key's own `alg` (if it has one) is that algorithm.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .background import cancel

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
MAX_KEYS = 100


def _parse(document: bytes) -> list[dict[str, Any]]:
    body = orjson.loads(document)
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        raise ValueError('a JWKS is a JSON object {"keys": [...]}')
    return [
        key
        for key in keys[:MAX_KEYS]
        if isinstance(key, dict)
        and key.get("kty") not in (None, "oct")
        and key.get("use", "sig") == "sig"
    ]


class JwksKeys:
    def __init__(
        self,
        *,
        url: str | None = None,
        path: Path | None = None,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError("A JWKS comes from a URL or a file: give one of them.")
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"The JWKS URL must be http:// or https://, not {url!r}.")
        self.url = url
        self.path = path
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._keys: list[dict[str, Any]] = []
        self._kids: set[str | None] = set()
        self._built: dict[tuple[int, str], PyJWK | None] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.fetched_at: float | None = None  # time.monotonic() of the last good read
        self.attempted_at = -float("inf")
        self.fetches = 0
        self.error: str | None = None

    @property
    def source(self) -> str:
        return self.url or str(self.path)

    def knows(self, kid: str | None) -> bool:
        return kid in self._kids

    def candidates(self, kid: str | None, alg: str) -> list[PyJWK]:
        """The keys a token with this `kid` (None: any key) and `alg` may be checked with."""
        found: list[PyJWK] = []
        for index, data in enumerate(self._keys):
            if kid is not None and data.get("kid") != kid:
                continue
            if data.get("alg", alg) != alg:
                continue
            if (index, alg) not in self._built:
                try:
                    self._built[(index, alg)] = PyJWK(data, algorithm=alg)
                except PyJWTError:  # a key of another type than `alg` needs, or malformed
                    self._built[(index, alg)] = None
            built = self._built[(index, alg)]
            if built is not None:
                found.append(built)
        return found

    async def start(self) -> None:
        """Read the set once (a failure is logged: tokens are refused until a read works),
        then keep it fresh in the background."""
        async with self._lock:
            await self._refresh()
        self._task = asyncio.create_task(self._keep_fresh(), name="jwks")

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None

    async def ensure(self, kid: str | None) -> None:
        """Read the set again if it lacks `kid`, unless it was read too recently."""
        if self.knows(kid):
            return
        async with self._lock:
            if self.knows(kid):
                return  # another request's refresh found it
            if time.monotonic() - self.attempted_at < self.min_refresh_seconds:
                return
            await self._refresh()

    def status(self) -> dict[str, Any]:
        age = None if self.fetched_at is None else round(time.monotonic() - self.fetched_at, 1)
        ok = self.fetched_at is not None and self.error is None
        return {"status": "ok" if ok else "unavailable", "keys": len(self._keys), "ageSeconds": age}

    async def _keep_fresh(self) -> None:
        while True:
            failed = self.error is not None
            await asyncio.sleep(self.min_refresh_seconds if failed else self.cache_seconds)
            async with self._lock:
                await self._refresh()

    async def _refresh(self) -> None:
        self.attempted_at = time.monotonic()
        self.fetches += 1
        try:
            keys = _parse(await asyncio.to_thread(self._read))
        except Exception as exc:  # keep the keys we have; the next refresh tries again
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("JWKS %s could not be read: %s", self.source, self.error)
            return
        self._keys = keys
        self._kids = {key.get("kid") for key in keys}
        self._built = {}
        self.fetched_at = time.monotonic()
        self.error = None

    def _read(self) -> bytes:
        if self.path is not None:
            with self.path.open("rb") as file:
                data = file.read(MAX_JWKS_BYTES + 1)
        else:
            assert self.url is not None
            request = urllib.request.Request(
                self.url, headers={"Accept": "application/json", "User-Agent": "crdt-state"}
            )
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as answer:
                data = answer.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return data
