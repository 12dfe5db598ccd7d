"""Authentication (JWT) and authorization (per-workspace roles), without any web framework.

Token format — a JWT signed with HS256 (JWT_SECRET_KEY) or RS256/ES256/EdDSA (keys from a
JWKS URL or file, crdt_state/jwks.py)::

    {
      "sub": "alice",                    # required, non-empty string: who is calling
      "exp": 1795773600,                 # required (unless allowed otherwise); honoured
      "iat": 1795770000,                 # issued at: exp - iat is at most the max lifetime
      "nbf": 1795770000,                 # optional, honoured
      "jti": "5f0c…",                    # optional token id: what a token revocation names
      "admin": true,                     # optional: a server admin (the /api/admin API)
      "workspaces": {                    # optional object: workspace id -> role
        "team-a": "write",               # "read" < "write" < "admin"
        "*": "read"                      # "*" applies to every workspace (service tokens)
      }
    }

An explicit workspace entry wins over "*". Unknown role strings are ignored, never read as
privilege. A missing "workspaces" claim means no access anywhere. "admin" counts only when it is
the JSON value true. With no audience configured, tokens carrying "aud" are rejected; with one
(or an issuer) configured, tokens without it or with another are rejected. A token covered by a
revocation (crdt_state/revocations.py) is refused, even one verified and remembered before. In
dev mode every request is the principal "dev", which is admin everywhere, whatever token it
sends.

Transport: REST clients send ``Authorization: Bearer <jwt>``. Browsers cannot set headers on
a WebSocket, so a WebSocket client sends the token either as the query parameter
``?token=<jwt>`` or as an extra subprotocol ``bearer.<jwt>`` (e.g.
``new WebSocket(url, ["crdt-state", "bearer." + jwt])``). The query parameter wins if both
are present. The server selects the subprotocol ``crdt-state`` when it was offered; otherwise,
because a browser fails the handshake when none of its offered subprotocols is selected, it
selects the ``bearer.`` entry (which echoes the token back to that client only — offer
``crdt-state`` as well to avoid that). With no subprotocol offered, none is selected.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import get_default_algorithms

from .errors import Forbidden, Unauthorized
from .jwks import JwksKeys
from .jwt_decode import BAD_SIGNATURE, decode
from .revocations import RevocationList

WILDCARD = "*"
DEV_SUBJECT = "dev"
SUBPROTOCOL = "crdt-state"
BEARER_PREFIX = "bearer."
LOOPBACK = "loopback"
MAX_TOKEN_CHARS = 16_384
VERIFIED_TOKENS = 4096  # tokens kept verified (least recently used go first)
VERIFIED_TOKEN_SECONDS = 60.0  # a verified token is checked again after this long
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")  # with a JWKS (or a public key)
_SHOWN_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Role(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: object) -> Role | None:
        """``"read"``/``"write"``/``"admin"`` (any case) -> Role; anything else -> None."""
        if not isinstance(text, str):
            return None
        return _ROLE_NAMES.get(text.strip().lower())

    @property
    def label(self) -> str:
        return self.name.lower()


_ROLE_NAMES = {role.name.lower(): role for role in Role}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: Mapping[str, Role] = field(hash=False)
    dev: bool = False
    admin: bool = False  # a server admin: claim "admin": true
    token_id: str | None = None  # "jti"
    issued_at: float | None = None  # "iat"
    expires: float = math.inf  # "exp" plus the leeway: when its sockets are closed

    def __post_init__(self) -> None:
        # A read-only copy, so mutating the caller's dict cannot change a principal's access.
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    def role_for(self, workspace: str) -> Role | None:
        if self.dev:
            return Role.ADMIN
        role = self.roles.get(workspace)
        return role if role is not None else self.roles.get(WILDCARD)


DEV_PRINCIPAL = Principal(DEV_SUBJECT, {WILDCARD: Role.ADMIN}, dev=True, admin=True)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        algorithms: Sequence[str] | None = None,
        dev: bool = False,
        leeway_seconds: int = 0,
        keys: JwksKeys | None = None,
        issuers: Sequence[str] = (),
        audiences: Sequence[str] = (),
        require_exp: bool = True,
        max_lifetime_seconds: float | None = None,
        revoked: RevocationList | None = None,
    ) -> None:
        if algorithms is None:
            asymmetric = ASYMMETRIC_ALGORITHMS if keys is not None or public_key else ()
            algorithms = (("HS256",) if secret else ()) + asymmetric
        self.algorithms = tuple(algorithms)
        self.secret = secret
        self.public_key = public_key
        self.keys = keys
        self.issuers = tuple(issuers)
        self.audiences = tuple(audiences)
        self.require_exp = require_exp
        self.max_lifetime_seconds = max_lifetime_seconds or None
        self.revoked = revoked if revoked is not None else RevocationList()
        self.dev = dev
        self.leeway_seconds = leeway_seconds
        # Tokens verified lately: a client sends the same one with every request, and checking
        # its signature was 11 % of a hot GET. Keyed by the whole token (signature included).
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        if not dev:
            self._check_configuration()

    def _check_configuration(self) -> None:
        if not self.algorithms:
            raise ValueError(
                "No way to check tokens: set a shared secret (HS256) or a JWKS URL or file."
            )
        for alg in self.algorithms:
            if alg.lower() == "none":
                raise ValueError("The 'none' algorithm would accept unsigned tokens; remove it.")
            if alg.startswith("HS"):
                if not self.secret:
                    raise ValueError(f"{alg} needs a shared secret; set one.")
                hmac = get_default_algorithms().get(alg)
                weak = hmac.check_key_length(hmac.prepare_key(self.secret)) if hmac else None
                if weak:
                    raise ValueError(f"{weak} Generate one with secrets.token_urlsafe(64).")
            elif not self.public_key and self.keys is None:
                raise ValueError(f"{alg} needs public keys: set a JWKS URL or file.")
            elif alg not in get_default_algorithms():
                raise ValueError(f"{alg} is unavailable; install 'cryptography' or choose HS256.")

    async def start(self) -> None:
        if self.keys is not None and not self.dev:
            await self.keys.start()

    async def close(self) -> None:
        if self.keys is not None:
            await self.keys.close()

    async def prepare(self, token: str | None) -> None:
        """Before `authenticate`, off its synchronous path: a token signed with a key the JWKS
        does not hold (yet) makes the key set be read again (rate-limited)."""
        if self.keys is None or self.dev or not token or len(token) > MAX_TOKEN_CHARS:
            return
        if token in self._verified:
            return
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return
        alg, kid = header.get("alg"), header.get("kid")
        if alg in self.algorithms and not str(alg).startswith("HS"):
            await self.keys.ensure(kid if isinstance(kid, str) else None)

    def authenticate(self, token: str | None) -> Principal:
        if self.dev:
            return DEV_PRINCIPAL
        if not token:
            raise Unauthorized(
                "missing token: send 'Authorization: Bearer <token>' (REST) or "
                "'?token=<token>' / subprotocol 'bearer.<token>' (WebSocket)."
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(
                f"The token is longer than {MAX_TOKEN_CHARS} characters; use a shorter one."
            )
        known = self._verified.get(token)
        now = time.time()
        principal: Principal | None = None
        if known is not None:
            if now < known[1]:
                principal = known[0]
            else:
                del self._verified[token]  # past its expiry (or its time in the cache)
        if principal is None:
            principal = self._verify(token)
            until = min(principal.expires, now + VERIFIED_TOKEN_SECONDS)
            self._verified[token] = (principal, until)
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        # Checked on every use, remembered or not: a revocation applies from its first moment.
        revocation = self.revoked.covering(principal)
        if revocation is not None:
            raise Unauthorized(revocation.message())
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized(
                "The token is not a well-formed JWT (header.payload.signature); send the token "
                "exactly as it was issued."
            ) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            allowed = ", ".join(self.algorithms)
            short = isinstance(alg, str) and alg.isalnum() and len(alg) <= 10
            shown = repr(alg) if short else "an unsupported algorithm"
            raise Unauthorized(
                f"The token is signed with {shown}, but this server accepts only {allowed}; "
                "get a token signed with one of those."
            )
        alg = str(alg)
        keys: list[Any] = [self.secret or ""] if alg.startswith("HS") else self._public_keys(header)
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = decode(
                    token,
                    key,
                    alg,
                    leeway=self.leeway_seconds,
                    require_exp=self.require_exp,
                    issuers=self.issuers,
                    audiences=self.audiences,
                )
                break
            except jwt.InvalidSignatureError:
                continue  # the next candidate key, if any
        if claims is None:
            raise Unauthorized(BAD_SIGNATURE)
        return self._principal(claims)

    def _public_keys(self, header: dict[str, Any]) -> list[Any]:
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        found: list[Any] = []
        if self.keys is not None:
            found += self.keys.candidates(kid, str(header["alg"]))
        if self.public_key:
            found.append(self.public_key)
        if not found:
            shown = f" (key id {kid!r})" if kid and _SHOWN_KID.fullmatch(kid) else ""
            raise Unauthorized(
                f"The token is signed with a key this server does not know{shown}; get a token "
                "from the identity provider this server trusts."
            )
        return found

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthorized(
                "The token's 'sub' claim is empty; get a token that names its subject."
            )
        workspaces = claims.get("workspaces", {})
        if not isinstance(workspaces, dict):
            raise Unauthorized(
                "The token's 'workspaces' claim must be an object mapping workspace id to "
                "'read', 'write' or 'admin'; get a token in that format."
            )
        roles: dict[str, Role] = {}
        for workspace, text in workspaces.items():
            role = Role.parse(text)
            if role is not None:
                roles[str(workspace)] = role
        token_id = claims.get("jti")
        if token_id is not None and (not isinstance(token_id, str) or not token_id):
            raise Unauthorized("The token's 'jti' claim must be a non-empty string.")
        issued, exp = _number(claims.get("iat")), _number(claims.get("exp"))
        limit = self.max_lifetime_seconds
        if limit is not None and exp is not None:
            start = issued if issued is not None else time.time()
            if exp - start > limit + self.leeway_seconds:
                raise Unauthorized(
                    f"The token lives longer than this server accepts ({limit:.0f} s from "
                    "'iat' to 'exp'); get a shorter-lived token."
                )
        return Principal(
            subject,
            roles,
            admin=claims.get("admin") is True,
            token_id=token_id,
            issued_at=issued,
            expires=math.inf if exp is None else exp + self.leeway_seconds,
        )

    def authorize(self, principal: Principal, workspace: str, needed: Role) -> Role:
        role = principal.role_for(workspace)
        if role is not None and role >= needed:
            return role
        have = f"only {role.label} access" if role is not None else "no access"
        raise Forbidden(
            f"{principal.subject!r} has {have} to workspace {workspace!r}, which needs "
            f"{needed.label}; ask a workspace admin for {needed.label} access.",
            workspace=workspace,
            needed=needed.label,
        )


def mint_token(
    secret: str,
    subject: str,
    workspaces: Mapping[str, str],
    ttl_seconds: int | None = 3600,
    algorithm: str = "HS256",
    *,
    admin: bool = False,
    token_id: str | None = None,
) -> str:
    """A token for local use and tests; it always has a `jti` (so it can be revoked alone)."""
    if not subject:
        raise ValueError("subject must be a non-empty string.")
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": int(time.time()),
        "jti": token_id or uuid.uuid4().hex,
        "workspaces": {},
    }
    for workspace, text in workspaces.items():
        role = Role.parse(text)
        if role is None:
            raise ValueError(
                f"Unknown role {text!r} for workspace {workspace!r}; use read, write or admin."
            )
        claims["workspaces"][workspace] = role.label
    if ttl_seconds is not None:
        claims["exp"] = claims["iat"] + ttl_seconds
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=algorithm)


def bearer_token(authorization_header: str | None) -> str | None:
    if not authorization_header:
        return None
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def websocket_token(
    query_token: str | None, subprotocols: Sequence[str]
) -> tuple[str | None, str | None]:
    """Return (token, subprotocol to accept); see the module docstring for the convention."""
    bearer_entry = next(
        (p for p in subprotocols if p.startswith(BEARER_PREFIX) and len(p) > len(BEARER_PREFIX)),
        None,
    )
    token = query_token or (bearer_entry[len(BEARER_PREFIX) :] if bearer_entry else None)
    if SUBPROTOCOL in subprotocols:
        return token, SUBPROTOCOL
    return token, bearer_entry


def is_loopback_host(host: str) -> bool:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _normalise_origin(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with default ports dropped; None if not a scheme://host[:port]."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if not scheme or not host or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    if port is not None and _DEFAULT_PORTS.get(scheme) == port:
        port = None
    return scheme, host, port


def origin_allowed(origin: str | None, allowed: Sequence[str], host: str | None = None) -> bool:
    """Whether a browser page at ``origin`` may use this server.

    A missing Origin (a non-browser client) is allowed — its token is still checked. A page of
    this server's own origin (its host and port are the request's ``Host``: the inspector) is
    allowed. ``"*"`` allows every origin. ``"loopback"`` allows pages on localhost /
    127.0.0.0/8 / [::1] on any port (dev mode). Other entries match scheme://host[:port]
    exactly, ignoring case and default ports; an explicitly listed loopback origin matches too.
    """
    if origin is None:
        return True
    if WILDCARD in allowed:
        return True
    parsed = _normalise_origin(origin)
    if parsed is None:
        return False
    if host and _normalise_origin(f"{parsed[0]}://{host}") == parsed:
        return True
    if LOOPBACK in allowed and parsed[0] in _DEFAULT_PORTS and is_loopback_host(parsed[1]):
        return True
    return any(parsed == _normalise_origin(entry) for entry in allowed if entry != LOOPBACK)
