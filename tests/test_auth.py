"""Tokens, roles, and the browser-facing transport rules that users rely on."""

from __future__ import annotations

import time

import jwt
import pytest

from crdt_state.auth import (
    Authenticator,
    Principal,
    Role,
    bearer_token,
    is_loopback_host,
    mint_token,
    origin_allowed,
    websocket_token,
)
from crdt_state.errors import Forbidden, Unauthorized

SECRET = "test-secret-0123456789-abcdefghijklmnop"
OTHER_SECRET = "other-secret-0123456789-abcdefghijklmnop"


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(secret=SECRET)


def rejected(auth: Authenticator, token: str | None) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(token)
    if token:
        assert token not in info.value.message
        assert token not in str(info.value.to_json())
    assert info.value.status == 401
    return info.value


# --- roles and principals ---------------------------------------------------------------


def test_role_parse_and_order() -> None:
    assert Role.parse("read") is Role.READ
    assert Role.parse("write") is Role.WRITE
    assert Role.parse("admin") is Role.ADMIN
    assert Role.parse("owner") is None
    assert Role.parse("") is None
    assert Role.READ < Role.WRITE < Role.ADMIN


def test_explicit_entry_wins_over_wildcard() -> None:
    p = Principal("svc", {"*": Role.READ, "team-a": Role.ADMIN})
    assert p.role_for("team-a") is Role.ADMIN
    assert p.role_for("anything") is Role.READ
    assert Principal("bob", {"team-a": Role.READ}).role_for("team-b") is None


def test_principal_roles_cannot_be_changed_through_the_callers_dict() -> None:
    roles = {"team-a": Role.READ}
    p = Principal("bob", roles)
    roles["team-a"] = Role.ADMIN
    assert p.role_for("team-a") is Role.READ


# --- authentication ----------------------------------------------------------------------


def test_minted_token_authenticates_and_carries_its_roles(auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", {"team-a": "write", "team-b": "read"})
    p = auth.authenticate(token)
    assert p.subject == "alice"
    assert not p.dev
    assert dict(p.roles) == {"team-a": Role.WRITE, "team-b": Role.READ}
    assert p.role_for("team-c") is None


def test_wildcard_token_reaches_every_workspace(auth: Authenticator) -> None:
    p = auth.authenticate(mint_token(SECRET, "indexer", {"*": "read"}))
    assert p.role_for("any-workspace") is Role.READ
    assert auth.authorize(p, "another", Role.READ) is Role.READ
    with pytest.raises(Forbidden):
        auth.authorize(p, "another", Role.WRITE)


def test_token_without_exp_is_accepted(auth: Authenticator) -> None:
    p = auth.authenticate(mint_token(SECRET, "svc", {"w": "admin"}, ttl_seconds=None))
    assert p.role_for("w") is Role.ADMIN


def test_unknown_role_strings_grant_nothing(auth: Authenticator) -> None:
    token = jwt.encode(
        {"sub": "eve", "workspaces": {"w": "superuser", "x": 3, "y": "read"}}, SECRET, "HS256"
    )
    p = auth.authenticate(token)
    assert p.role_for("w") is None
    assert p.role_for("x") is None
    assert p.role_for("y") is Role.READ


def test_missing_token(auth: Authenticator) -> None:
    assert "missing token" in rejected(auth, None).message.lower()
    assert "missing token" in rejected(auth, "").message.lower()


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "Bearer xyz", "x" * 20_000])
def test_garbage_token(auth: Authenticator, garbage: str) -> None:
    rejected(auth, garbage)


def test_token_signed_with_another_secret(auth: Authenticator) -> None:
    error = rejected(auth, mint_token(OTHER_SECRET, "alice", {"w": "admin"}))
    assert "signature" in error.message


def test_unsigned_token_is_rejected(auth: Authenticator) -> None:
    token = jwt.encode({"sub": "alice", "workspaces": {"w": "admin"}}, None, algorithm="none")
    rejected(auth, token)


def test_expired_token_says_when(auth: Authenticator) -> None:
    exp = int(time.time()) - 120
    token = jwt.encode({"sub": "alice", "exp": exp, "workspaces": {}}, SECRET, "HS256")
    error = rejected(auth, token)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
    assert error.message == f"The token expired at {stamp}; get a new one."


def test_negative_ttl_mints_an_expired_token(auth: Authenticator) -> None:
    assert "expired" in rejected(auth, mint_token(SECRET, "a", {}, ttl_seconds=-5)).message


def test_a_token_used_before_is_still_refused_once_it_expires(auth: Authenticator) -> None:
    # Verified tokens are remembered (a client sends the same one with every request), but
    # never past their expiry.
    exp = int(time.time()) + 1
    token = jwt.encode({"sub": "alice", "exp": exp, "workspaces": {}}, SECRET, "HS256")
    assert auth.authenticate(token).subject == "alice"
    while time.time() <= exp:  # the expiry itself is what is tested: let it come
        time.sleep(0.05)
    assert "expired" in rejected(auth, token).message


def test_a_remembered_token_with_another_signature_is_refused(auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", {"w": "admin"})
    assert auth.authenticate(token).subject == "alice"
    header, payload, _ = token.split(".")
    forged = mint_token(OTHER_SECRET, "alice", {"w": "admin"}).split(".")[2]
    assert "signature" in rejected(auth, f"{header}.{payload}.{forged}").message
    assert auth.authenticate(token).subject == "alice"


def test_leeway_tolerates_small_clock_skew() -> None:
    token = mint_token(SECRET, "alice", {"w": "read"}, ttl_seconds=-5)
    p = Authenticator(secret=SECRET, leeway_seconds=60).authenticate(token)
    assert p.subject == "alice"


def test_token_not_yet_valid(auth: Authenticator) -> None:
    nbf = int(time.time()) + 3600
    token = jwt.encode({"sub": "alice", "nbf": nbf, "workspaces": {}}, SECRET, "HS256")
    assert "not valid before" in rejected(auth, token).message


def test_token_without_sub(auth: Authenticator) -> None:
    token = jwt.encode({"workspaces": {"w": "admin"}}, SECRET, "HS256")
    assert "'sub'" in rejected(auth, token).message


@pytest.mark.parametrize("sub", ["", "  "])
def test_token_with_empty_sub(auth: Authenticator, sub: str) -> None:
    token = jwt.encode({"sub": sub, "workspaces": {}}, SECRET, "HS256")
    assert "'sub'" in rejected(auth, token).message


@pytest.mark.parametrize("workspaces", [["w"], "w:admin", 1])
def test_workspaces_must_be_an_object(auth: Authenticator, workspaces: object) -> None:
    token = jwt.encode({"sub": "alice", "workspaces": workspaces}, SECRET, "HS256")
    assert "'workspaces'" in rejected(auth, token).message


def test_algorithm_not_allowed(auth: Authenticator) -> None:
    token = jwt.encode({"sub": "alice", "workspaces": {}}, SECRET + SECRET, "HS512")
    assert "HS256" in rejected(auth, token).message


def test_misconfiguration_fails_at_startup() -> None:
    with pytest.raises(ValueError):
        Authenticator()
    with pytest.raises(ValueError):
        Authenticator(secret="short")
    with pytest.raises(ValueError):
        Authenticator(secret=SECRET, algorithms=("none",))
    with pytest.raises(ValueError):
        Authenticator(secret=SECRET, algorithms=("RS256",))


def test_mint_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match="owner"):
        mint_token(SECRET, "alice", {"w": "owner"})


# --- authorization -----------------------------------------------------------------------


def test_read_role_cannot_write(auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", {"team-a": "read"})
    p = auth.authenticate(token)
    assert auth.authorize(p, "team-a", Role.READ) is Role.READ
    with pytest.raises(Forbidden) as info:
        auth.authorize(p, "team-a", Role.WRITE)
    assert info.value.status == 403
    assert "team-a" in info.value.message
    assert "write" in info.value.message
    assert token not in info.value.message
    assert info.value.to_json()["needed"] == "write"


def test_wrong_workspace_is_forbidden(auth: Authenticator) -> None:
    p = auth.authenticate(mint_token(SECRET, "alice", {"team-a": "admin"}))
    with pytest.raises(Forbidden) as info:
        auth.authorize(p, "team-b", Role.READ)
    assert "team-b" in info.value.message
    assert "read" in info.value.message


def test_admin_covers_write_and_read(auth: Authenticator) -> None:
    p = auth.authenticate(mint_token(SECRET, "alice", {"team-a": "admin"}))
    assert auth.authorize(p, "team-a", Role.WRITE) is Role.ADMIN
    assert auth.authorize(p, "team-a", Role.READ) is Role.ADMIN


def test_dev_mode_is_admin_everywhere_whatever_the_token() -> None:
    dev = Authenticator(dev=True)
    for token in (None, "garbage", mint_token(OTHER_SECRET, "x", {"w": "read"})):
        p = dev.authenticate(token)
        assert p.dev
        assert p.subject == "dev"
        assert dev.authorize(p, "any-workspace", Role.ADMIN) is Role.ADMIN


# --- transport ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("abc.def.ghi", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_websocket_token_from_query() -> None:
    assert websocket_token("tok", []) == ("tok", None)
    assert websocket_token("tok", ["crdt-state"]) == ("tok", "crdt-state")


def test_websocket_token_from_subprotocol_with_crdt_state_offered() -> None:
    assert websocket_token(None, ["crdt-state", "bearer.tok"]) == ("tok", "crdt-state")


def test_websocket_token_from_subprotocol_alone_selects_that_entry() -> None:
    assert websocket_token(None, ["bearer.a.b.c"]) == ("a.b.c", "bearer.a.b.c")


def test_websocket_query_token_wins() -> None:
    assert websocket_token("query", ["crdt-state", "bearer.sub"]) == ("query", "crdt-state")


def test_websocket_without_token() -> None:
    assert websocket_token(None, []) == (None, None)
    assert websocket_token("", []) == (None, None)
    assert websocket_token(None, ["crdt-state"]) == (None, "crdt-state")
    assert websocket_token(None, ["bearer."]) == (None, None)


def test_websocket_subprotocol_token_authenticates(auth: Authenticator) -> None:
    jwt_text = mint_token(SECRET, "alice", {"w": "write"})
    token, selected = websocket_token(None, ["crdt-state", f"bearer.{jwt_text}"])
    assert selected == "crdt-state"
    assert auth.authenticate(token).role_for("w") is Role.WRITE


ALLOWED = ["https://app.example.com", "http://tools.example.com:8080"]


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        (None, ALLOWED, True),
        (None, [], True),
        ("https://evil.example", ["*"], True),
        ("https://app.example.com", ALLOWED, True),
        ("HTTPS://App.Example.COM", ALLOWED, True),
        ("https://app.example.com:443", ALLOWED, True),
        ("http://tools.example.com:8080", ALLOWED, True),
        ("https://app.example.com", ["https://app.example.com/"], True),
        ("http://app.example.com", ALLOWED, False),
        ("https://app.example.com:8443", ALLOWED, False),
        ("https://app.example.com.evil.io", ALLOWED, False),
        ("https://evil.example", ALLOWED, False),
        ("null", ALLOWED, False),
        ("", ALLOWED, False),
        ("http://localhost:3000", ALLOWED, False),
        ("http://127.0.0.1:5173", ALLOWED, False),
        ("http://[::1]:8000", ALLOWED, False),
        ("http://localhost:3000", [*ALLOWED, "loopback"], True),
        ("http://127.0.0.1:5173", ["loopback"], True),
        ("http://[::1]:8000", ["loopback"], True),
        ("https://app.example.com", ["loopback"], False),
        ("http://localhost.evil.io", ["loopback"], False),
        ("http://localhost:3000", ["http://localhost:3000"], True),
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, allowed) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected
