"""Checking one JWT against one key, with a sentence a client can act on for each refusal.

Messages never contain the token, and never echo the token's claims back except the times
(`exp`, `nbf`, `iat`) a client needs to see what went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from .errors import Unauthorized

_MISSING = {
    "sub": "The token has no 'sub' claim; get a token that names its subject.",
    "exp": "The token has no expiry ('exp'); this server refuses tokens that never expire: "
    "get one that expires.",
    "iss": "The token has no issuer ('iss'); get a token from the identity provider this "
    "server trusts.",
    "aud": "The token has no audience ('aud'); get a token issued for this server.",
}


def utc(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unreadable time"


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def decode(
    token: str,
    key: Any,
    alg: str,
    *,
    leeway: float,
    require_exp: bool,
    issuers: Sequence[str],
    audiences: Sequence[str],
) -> dict[str, Any]:
    """The verified claims; Unauthorized with why otherwise (InvalidSignatureError is let
    through when `key` is one of several candidates: the caller tries the next)."""
    required = ["sub"] + ["exp"] * require_exp + ["iss"] * bool(issuers) + ["aud"] * bool(audiences)
    options: Any = {"require": required}
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options=options,
            leeway=leeway,
            issuer=list(issuers) or None,
            audience=list(audiences) or None,
        )
        return claims
    except jwt.ExpiredSignatureError:
        # The signature was verified before the time claims; this read is for the message.
        when = utc(unverified_claims(token).get("exp"))
        raise Unauthorized(f"The token expired at {when}; get a new one.") from None
    except jwt.ImmatureSignatureError:
        unverified = unverified_claims(token)
        times = {
            c: unverified[c] for c in ("nbf", "iat") if isinstance(unverified.get(c), int | float)
        }
        claim = max(times, key=lambda c: times[c]) if times else "nbf"
        when = utc(unverified.get(claim))
        raise Unauthorized(
            f"The token is not valid before {when} ({claim}); check the issuer's clock or wait."
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(
            _MISSING.get(exc.claim, f"The token has no {exc.claim!r} claim; get a new one.")
        ) from None
    except InvalidSubjectError:
        raise Unauthorized(
            "The token's 'sub' claim is not a string; get a token with a string subject."
        ) from None
    except InvalidJTIError:
        raise Unauthorized("The token's 'jti' claim must be a non-empty string.") from None
    except jwt.InvalidAudienceError:
        if audiences:
            raise Unauthorized(
                "The token is not meant for this server: its audience ('aud') is not one this "
                "server accepts; get a token issued for this server."
            ) from None
        raise Unauthorized(
            "The token is restricted to an audience ('aud') this server does not check; "
            "get a token without 'aud'."
        ) from None
    except jwt.InvalidIssuerError:
        raise Unauthorized(
            "The token's issuer ('iss') is not one this server trusts; get a token from the "
            "identity provider this server trusts."
        ) from None
    except jwt.InvalidIssuedAtError:
        raise Unauthorized(
            "The token's 'iat' claim is not a number; get a correctly issued token."
        ) from None
    except jwt.DecodeError as exc:
        if isinstance(exc, jwt.InvalidSignatureError):
            raise
        raise Unauthorized(
            "The token could not be decoded (bad encoding or a non-numeric exp/nbf claim); "
            "send the token exactly as it was issued."
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthorized("The token was rejected; get a new one.") from None


BAD_SIGNATURE = (
    "The token's signature does not match this server's key; get a token issued for this server."
)
