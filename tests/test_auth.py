"""Tokens, roles, and the browser-facing transport rules that users rely on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

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
from crdt_state.revocations import Revocation, RevocationKind, RevocationList

SECRET = "test-secret-0123456789-abcdefghijklmnop"
OTHER_SECRET = "other-secret-0123456789-abcdefghijklmnop"


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(secret=SECRET)


def signed(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    """A token with `claims`, expiring in an hour unless they say otherwise."""
    return jwt.encode({"exp": int(time.time()) + 3600, **claims}, key, alg)


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


def test_a_token_without_exp_is_refused(auth: Authenticator) -> None:
    error = rejected(auth, mint_token(SECRET, "svc", {"w": "admin"}, ttl_seconds=None))
    assert error.message == (
        "The token has no expiry ('exp'); this server refuses tokens that never expire: "
        "get one that expires."
    )


def test_a_token_without_exp_is_accepted_when_the_server_allows_it() -> None:
    lenient = Authenticator(secret=SECRET, require_exp=False)
    p = lenient.authenticate(mint_token(SECRET, "svc", {"w": "admin"}, ttl_seconds=None))
    assert p.role_for("w") is Role.ADMIN
    assert p.expires == float("inf")


def test_unknown_role_strings_grant_nothing(auth: Authenticator) -> None:
    token = signed({"sub": "eve", "workspaces": {"w": "superuser", "x": 3, "y": "read"}})
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
    token = signed({"sub": "alice", "nbf": nbf, "exp": nbf + 60, "workspaces": {}})
    assert "not valid before" in rejected(auth, token).message


def test_token_without_sub(auth: Authenticator) -> None:
    token = signed({"workspaces": {"w": "admin"}})
    assert "'sub'" in rejected(auth, token).message


@pytest.mark.parametrize("sub", ["", "  "])
def test_token_with_empty_sub(auth: Authenticator, sub: str) -> None:
    token = signed({"sub": sub, "workspaces": {}})
    assert "'sub'" in rejected(auth, token).message


@pytest.mark.parametrize("workspaces", [["w"], "w:admin", 1])
def test_workspaces_must_be_an_object(auth: Authenticator, workspaces: object) -> None:
    token = signed({"sub": "alice", "workspaces": workspaces})
    assert "'workspaces'" in rejected(auth, token).message


def test_algorithm_not_allowed(auth: Authenticator) -> None:
    token = signed({"sub": "alice", "workspaces": {}}, SECRET + SECRET, "HS512")
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


# --- lifetime, claims, issuer and audience -------------------------------------------------


def test_a_token_living_longer_than_the_limit_is_refused() -> None:
    strict = Authenticator(secret=SECRET, max_lifetime_seconds=3600)
    assert strict.authenticate(mint_token(SECRET, "a", {}, ttl_seconds=3600)).subject == "a"
    error = rejected(strict, mint_token(SECRET, "a", {}, ttl_seconds=3601))
    assert "lives longer than this server accepts (3600 s" in error.message
    # Without 'iat', the lifetime counts from now.
    assert strict.authenticate(signed({"sub": "b", "exp": int(time.time()) + 3000})).subject
    assert (
        "lives longer" in rejected(strict, signed({"sub": "b", "exp": time.time() + 4000})).message
    )


def test_minted_tokens_expire_and_carry_a_token_id(auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", {"w": "read"})
    claims = jwt.decode(token, SECRET, ["HS256"])
    assert claims["exp"] == claims["iat"] + 3600
    p = auth.authenticate(token)
    assert p.token_id == claims["jti"] and p.issued_at == claims["iat"]
    assert p.expires == claims["exp"]
    assert mint_token(SECRET, "a", {}, token_id="t-1").count(".") == 2
    assert auth.authenticate(mint_token(SECRET, "a", {}, token_id="t-1")).token_id == "t-1"


def test_the_admin_claim_must_be_true_itself(auth: Authenticator) -> None:
    assert auth.authenticate(mint_token(SECRET, "root", {}, admin=True)).admin
    assert not auth.authenticate(mint_token(SECRET, "alice", {"*": "admin"})).admin
    for value in ("true", 1, "yes", [True]):
        assert not auth.authenticate(signed({"sub": "x", "admin": value})).admin


@pytest.mark.parametrize("jti", ["", 7, ["a"]])
def test_a_malformed_token_id_is_refused(auth: Authenticator, jti: object) -> None:
    assert "'jti'" in rejected(auth, signed({"sub": "x", "jti": jti})).message


def test_issuer_and_audience_are_checked_when_configured() -> None:
    checked = Authenticator(secret=SECRET, issuers=["https://id.example"], audiences=["crdt"])
    good = {"sub": "a", "iss": "https://id.example", "aud": "crdt"}
    assert checked.authenticate(signed(good)).subject == "a"
    assert checked.authenticate(signed({**good, "aud": ["other", "crdt"]})).subject == "a"
    assert "issuer" in rejected(checked, signed({**good, "iss": "https://evil.example"})).message
    assert "no issuer" in rejected(checked, signed({"sub": "a", "aud": "crdt"})).message
    assert "not meant for this server" in rejected(checked, signed({**good, "aud": "x"})).message
    assert "no audience" in rejected(checked, signed({"sub": "a", "iss": good["iss"]})).message


def test_without_an_audience_configured_tokens_with_aud_are_refused(auth: Authenticator) -> None:
    assert "'aud'" in rejected(auth, signed({"sub": "a", "aud": "crdt"})).message


# --- revocation ----------------------------------------------------------------------------


def revocation(kind: RevocationKind, value: str, at: float) -> Revocation:
    moment = datetime.fromtimestamp(at, UTC)
    return Revocation(kind, value, moment, moment + timedelta(hours=1), "root", id=1)


def test_a_revoked_token_id_is_refused_even_when_remembered() -> None:
    revoked = RevocationList()
    auth = Authenticator(secret=SECRET, revoked=revoked)
    token = mint_token(SECRET, "alice", {"w": "write"}, token_id="t-1")
    other = mint_token(SECRET, "alice", {"w": "write"}, token_id="t-2")
    assert auth.authenticate(token).subject == "alice"  # verified, and remembered
    revoked.add(revocation(RevocationKind.TOKEN, "t-1", time.time()))
    assert "revoked" in rejected(auth, token).message
    assert auth.authenticate(other).token_id == "t-2"  # another token of alice's still works


def test_a_subject_revocation_covers_tokens_issued_until_then_only() -> None:
    revoked = RevocationList()
    auth = Authenticator(secret=SECRET, revoked=revoked)
    now = int(time.time())
    before = signed({"sub": "alice", "iat": now - 10})
    same_second = signed({"sub": "alice", "iat": now - 5})
    after = signed({"sub": "alice", "iat": now - 4})
    without_iat = signed({"sub": "alice"})
    bob = signed({"sub": "bob", "iat": now - 10})
    assert auth.authenticate(before).subject == "alice"
    revoked.add(revocation(RevocationKind.SUBJECT, "alice", now - 4.5))
    assert "issued before" in rejected(auth, same_second).message
    assert "issued before" in rejected(auth, before).message
    assert "revoked" in rejected(auth, without_iat).message
    assert auth.authenticate(after).subject == "alice"  # a token issued since works
    assert auth.authenticate(bob).subject == "bob"


def test_an_expired_revocation_no_longer_applies() -> None:
    revoked = RevocationList()
    auth = Authenticator(secret=SECRET, revoked=revoked)
    token = mint_token(SECRET, "alice", {}, token_id="t-1")
    old = datetime.now(UTC) - timedelta(hours=2)
    revoked.add(Revocation(RevocationKind.TOKEN, "t-1", old, old + timedelta(hours=1), "root"))
    assert auth.authenticate(token).token_id == "t-1"
    revoked.expire(time.time())
    assert len(revoked) == 0


def test_dev_mode_ignores_expiry_rules_and_revocations() -> None:
    revoked = RevocationList()
    dev = Authenticator(dev=True, revoked=revoked)
    revoked.add(revocation(RevocationKind.SUBJECT, "dev", time.time() + 10))
    assert dev.authenticate(None).admin
    assert dev.authenticate(mint_token(SECRET, "x", {}, ttl_seconds=None)).dev


# --- the token command ---------------------------------------------------------------------


def test_the_token_command_mints_expiring_revocable_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crdt_state.cli import main

    monkeypatch.setenv("JWT_SECRET_KEY", SECRET)
    monkeypatch.delenv("CRDT_STATE_MAX_TOKEN_LIFETIME_SECONDS", raising=False)
    assert main(["token", "--sub", "root", "--admin", "--workspace", "w=read"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, ["HS256"])
    assert claims["exp"] == claims["iat"] + 3600 and claims["admin"] is True and claims["jti"]
    assert main(["token", "--sub", "a", "--ttl", "0"]) == 2
    assert main(["token", "--sub", "a", "--ttl", "86401"]) == 2
    assert "CRDT_STATE_MAX_TOKEN_LIFETIME_SECONDS" in capsys.readouterr().err


def test_a_page_of_the_servers_own_origin_is_allowed() -> None:
    """The inspector's page opens its socket from the server's own origin: its host and port
    are the request's Host, whatever the allow-list says. Another origin is not."""
    assert origin_allowed("http://state.example:8001", [], "state.example:8001")
    assert origin_allowed("https://state.example", [], "state.example")
    assert origin_allowed("https://state.example", [], "state.example:443")
    assert not origin_allowed("https://evil.example", [], "state.example")
    assert not origin_allowed("http://state.example:8002", [], "state.example:8001")
    assert not origin_allowed("http://state.example", [], None)
