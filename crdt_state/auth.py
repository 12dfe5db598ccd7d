"""Authentication (JWT) and authorization (per-workspace roles), without any web framework.

Token format — a JWT signed with HS256 (shared secret) or RS256/ES256 (public key)::

    {
      "sub": "alice",                    # required, non-empty string: who is calling
      "exp": 1795773600,                 # optional, seconds since the epoch; honoured
      "nbf": 1795770000,                 # optional, honoured; "iat" is checked too
      "workspaces": {                    # optional object: workspace id -> role
        "team-a": "write",               # "read" < "write" < "admin"
        "*": "read"                      # "*" applies to every workspace (service tokens)
      }
    }

An explicit workspace entry wins over "*". Unknown role strings are ignored, never read as
privilege. A missing "workspaces" claim means no access anywhere. Tokens carrying "aud" are
rejected (this server checks no audience). In dev mode every request is the principal "dev",
which is admin everywhere, whatever token it sends.

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
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidSubjectError

from crdt_state.errors import Forbidden, Unauthorized

WILDCARD = "*"
DEV_SUBJECT = "dev"
SUBPROTOCOL = "crdt-state"
BEARER_PREFIX = "bearer."
LOOPBACK = "loopback"
MAX_TOKEN_CHARS = 16_384
VERIFIED_TOKENS = 4096  # tokens kept verified (least recently used go first)
VERIFIED_TOKEN_SECONDS = 60.0  # a verified token is checked again after this long
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

    def __post_init__(self) -> None:
        # A read-only copy, so mutating the caller's dict cannot change a principal's access.
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    def role_for(self, workspace: str) -> Role | None:
        if self.dev:
            return Role.ADMIN
        role = self.roles.get(workspace)
        return role if role is not None else self.roles.get(WILDCARD)


DEV_PRINCIPAL = Principal(DEV_SUBJECT, {WILDCARD: Role.ADMIN}, dev=True)


def _utc(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unreadable time"


def _unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        algorithms: Sequence[str] = ("HS256",),
        dev: bool = False,
        leeway_seconds: int = 0,
    ) -> None:
        self.algorithms = tuple(algorithms)
        self.secret = secret
        self.public_key = public_key
        self.dev = dev
        self.leeway_seconds = leeway_seconds
        # Tokens verified lately: a client sends the same one with every request, and checking
        # its signature was 11 % of a hot GET. Keyed by the whole token (signature included).
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        if dev:
            return
        if not self.algorithms:
            raise ValueError("At least one JWT algorithm must be allowed.")
        for alg in self.algorithms:
            if alg.lower() == "none":
                raise ValueError("The 'none' algorithm would accept unsigned tokens; remove it.")
            if alg.startswith("HS"):
                if not secret:
                    raise ValueError(f"{alg} needs a shared secret; set one.")
                hmac = get_default_algorithms().get(alg)
                weak = hmac.check_key_length(hmac.prepare_key(secret)) if hmac else None
                if weak:
                    raise ValueError(f"{weak} Generate one with secrets.token_urlsafe(64).")
            elif not public_key:
                raise ValueError(f"{alg} needs a public key (PEM); set one.")
            elif alg not in get_default_algorithms():
                raise ValueError(f"{alg} is unavailable; install 'cryptography' or choose HS256.")

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
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._verified[token]  # past its expiry (or its time in the cache): check again
        principal, expires = self._verify(token)
        self._verified[token] = (principal, min(expires, now + VERIFIED_TOKEN_SECONDS))
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and the time it expires at (infinity without 'exp')."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized(
                "The token is not a well-formed JWT (header.payload.signature); send the token "
                "exactly as it was issued."
            ) from None
        if alg not in self.algorithms:
            allowed = ", ".join(self.algorithms)
            short = isinstance(alg, str) and alg.isalnum() and len(alg) <= 10
            shown = repr(alg) if short else "an unsupported algorithm"
            raise Unauthorized(
                f"The token is signed with {shown}, but this server accepts only {allowed}; "
                "get a token signed with one of those."
            )
        key = self.secret if str(alg).startswith("HS") else self.public_key
        claims = self._decode(token, key or "", str(alg))

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
        exp = claims.get("exp")
        expires = float(exp) + self.leeway_seconds if isinstance(exp, int | float) else math.inf
        return Principal(subject, roles), expires

    def _decode(self, token: str, key: str, alg: str) -> dict[str, Any]:
        options: Any = {"require": ["sub"]}
        try:
            return jwt.decode(
                token, key, algorithms=[alg], options=options, leeway=self.leeway_seconds
            )
        except jwt.ExpiredSignatureError:
            # The signature was verified before the time claims; this read is for the message.
            when = _utc(_unverified_claims(token).get("exp"))
            raise Unauthorized(f"The token expired at {when}; get a new one.") from None
        except jwt.ImmatureSignatureError:
            unverified = _unverified_claims(token)
            times = {
                c: unverified[c]
                for c in ("nbf", "iat")
                if isinstance(unverified.get(c), int | float)
            }
            claim = max(times, key=lambda c: times[c]) if times else "nbf"
            when = _utc(unverified.get(claim))
            raise Unauthorized(
                f"The token is not valid before {when} ({claim}); check the issuer's clock or wait."
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "The token's signature does not match this server's key; "
                "get a token issued for this server."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"The token has no {exc.claim!r} claim; get a token that names its subject."
            ) from None
        except InvalidSubjectError:
            raise Unauthorized(
                "The token's 'sub' claim is not a string; get a token with a string subject."
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                "The token is restricted to an audience ('aud') this server does not check; "
                "get a token without 'aud'."
            ) from None
        except jwt.InvalidIssuedAtError:
            raise Unauthorized(
                "The token's 'iat' claim is not a number; get a correctly issued token."
            ) from None
        except jwt.DecodeError:
            raise Unauthorized(
                "The token could not be decoded (bad encoding or a non-numeric exp/nbf claim); "
                "send the token exactly as it was issued."
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthorized("The token was rejected; get a new one.") from None

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
) -> str:
    if not subject:
        raise ValueError("subject must be a non-empty string.")
    claims: dict[str, Any] = {"sub": subject, "iat": int(time.time()), "workspaces": {}}
    for workspace, text in workspaces.items():
        role = Role.parse(text)
        if role is None:
            raise ValueError(
                f"Unknown role {text!r} for workspace {workspace!r}; use read, write or admin."
            )
        claims["workspaces"][workspace] = role.label
    if ttl_seconds is not None:
        claims["exp"] = claims["iat"] + ttl_seconds
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


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """Whether a browser page at ``origin`` may use this server.

    A missing Origin (a non-browser client) is allowed — its token is still checked. ``"*"``
    allows every origin. ``"loopback"`` allows pages on localhost / 127.0.0.0/8 / [::1] on any
    port (dev mode). Other entries match scheme://host[:port] exactly, ignoring case and
    default ports; an explicitly listed loopback origin matches too.
    """
    if origin is None:
        return True
    if WILDCARD in allowed:
        return True
    parsed = _normalise_origin(origin)
    if parsed is None:
        return False
    if LOOPBACK in allowed and parsed[0] in _DEFAULT_PORTS and is_loopback_host(parsed[1]):
        return True
    return any(parsed == _normalise_origin(entry) for entry in allowed if entry != LOOPBACK)
