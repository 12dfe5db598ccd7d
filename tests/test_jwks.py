"""Tokens of an identity provider: RS256, ES256 and EdDSA, verified with keys from a JWKS served
over real HTTP by a tiny server this test starts (or from a JWKS file); key rotation, unknown
keys, the refresh rate limit, issuer and audience. Keys are generated here."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from crdt_state.auth import Authenticator
from crdt_state.errors import Unauthorized
from crdt_state.jwks import JwksKeys

from .server import ServerProcess
from .wire import RawPeer

ISSUER = "https://id.example.test"


class Key:
    """A private key of the test's identity provider and its public JWK."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk.update(kid=kid, use="sig")

    def token(self, subject: str = "alice", **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": subject, "iat": now, "exp": now + 600, "workspaces": {"ws": "write"}}
        return jwt.encode(
            {**body, **claims}, self.private, algorithm=self.alg, headers={"kid": self.kid}
        )


class JwksServer:
    """Serves `keys` as a JWKS at http://127.0.0.1:<port>/jwks.json, counting requests."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps({"keys": [key.jwk for key in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key("RS256", "rsa-1")


@pytest.fixture
def provider(rsa_key: Key) -> Iterator[JwksServer]:
    served = JwksServer([rsa_key, Key("ES256", "ec-1"), Key("EdDSA", "ed-1")])
    yield served
    served.close()


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(token)
    assert token not in info.value.message
    return info.value.message


async def started(keys: JwksKeys, **options: Any) -> Authenticator:
    auth = Authenticator(keys=keys, **options)
    await auth.start()
    return auth


async def test_rs256_es256_and_eddsa_tokens_are_verified_with_the_jwks(
    provider: JwksServer,
) -> None:
    auth = await started(JwksKeys(url=provider.url))
    try:
        for key in provider.keys:
            token = key.token(subject=f"user-{key.alg}")
            await auth.prepare(token)
            assert auth.authenticate(token).subject == f"user-{key.alg}"
        assert provider.requests == 1  # read once, at start
    finally:
        await auth.close()


async def test_a_rotated_key_is_picked_up_and_an_unknown_one_refused(
    provider: JwksServer, rsa_key: Key
) -> None:
    auth = await started(JwksKeys(url=provider.url, min_refresh_seconds=1.0))
    try:
        rotated = Key("RS256", "rsa-2")
        provider.keys.append(rotated)  # the provider publishes a new key
        token = rotated.token()
        await auth.prepare(token)  # read at start, too recently: not read again
        assert provider.requests == 1
        assert "does not know" in refused(auth, token)
        await asyncio.sleep(1.1)
        await auth.prepare(token)  # an unknown kid: the set is read again
        assert auth.authenticate(token).subject == "alice"
        assert provider.requests == 2
        stranger = Key("RS256", "rsa-x")
        forged = stranger.token()
        await auth.prepare(forged)  # read too recently: not read again
        assert provider.requests == 2
        assert "a key this server does not know (key id 'rsa-x')" in refused(auth, forged)
        await asyncio.sleep(1.1)
        await auth.prepare(forged)  # read again, still unknown
        assert provider.requests == 3
        assert "does not know" in refused(auth, forged)
        # A token that claims a known kid but is signed by another key.
        impostor = jwt.encode(
            {"sub": "eve", "exp": int(time.time()) + 60},
            stranger.private,
            algorithm="RS256",
            headers={"kid": rsa_key.kid},
        )
        assert "signature does not match" in refused(auth, impostor)
    finally:
        await auth.close()


async def test_the_key_set_is_read_again_when_its_time_is_up(provider: JwksServer) -> None:
    auth = await started(JwksKeys(url=provider.url, cache_seconds=0.3))
    try:
        await asyncio.sleep(1.0)
        assert provider.requests >= 3
        assert auth.keys is not None and auth.keys.status()["status"] == "ok"
    finally:
        await auth.close()


async def test_a_key_is_used_only_with_its_own_algorithm(provider: JwksServer) -> None:
    auth = await started(JwksKeys(url=provider.url))
    try:
        ec_key = provider.keys[1]
        # An HS256 token naming a JWKS key id is checked against the secret only (none here).
        hs = jwt.encode(
            {"sub": "eve", "exp": int(time.time()) + 60},
            "x" * 64,
            algorithm="HS256",
            headers={"kid": ec_key.kid},
        )
        assert "HS256" in refused(auth, hs)
        # An RS256 token that names the EC key: no RSA key with that id.
        wrong = jwt.encode(
            {"sub": "eve", "exp": int(time.time()) + 60},
            provider.keys[0].private,
            algorithm="RS256",
            headers={"kid": ec_key.kid},
        )
        assert "does not know" in refused(auth, wrong)
    finally:
        await auth.close()


async def test_issuer_and_audience_checks_apply_to_jwks_tokens(
    provider: JwksServer, rsa_key: Key
) -> None:
    auth = await started(JwksKeys(url=provider.url), issuers=[ISSUER], audiences=["crdt-state"])
    try:
        good = rsa_key.token(iss=ISSUER, aud="crdt-state")
        assert auth.authenticate(good).subject == "alice"
        assert "issuer" in refused(auth, rsa_key.token(iss="https://evil.test", aud="crdt-state"))
        assert "not meant" in refused(auth, rsa_key.token(iss=ISSUER, aud="another-api"))
        assert "no audience" in refused(auth, rsa_key.token(iss=ISSUER))
    finally:
        await auth.close()


async def test_a_jwks_file_works_and_is_read_again_for_a_new_key(tmp_path: Path) -> None:
    first, second = Key("ES256", "file-1"), Key("EdDSA", "file-2")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [first.jwk]}))
    auth = await started(JwksKeys(path=path, min_refresh_seconds=0))
    try:
        assert auth.authenticate(first.token()).subject == "alice"
        path.write_text(json.dumps({"keys": [first.jwk, second.jwk]}))
        token = second.token()
        await auth.prepare(token)
        assert auth.authenticate(token).subject == "alice"
    finally:
        await auth.close()


async def test_an_unreachable_jwks_refuses_tokens_and_says_so(rsa_key: Key) -> None:
    dead = JwksServer([])
    url = dead.url
    dead.close()
    auth = await started(JwksKeys(url=url, timeout_seconds=1))
    try:
        assert "does not know" in refused(auth, rsa_key.token())
        assert auth.keys is not None and auth.keys.status()["status"] == "unavailable"
    finally:
        await auth.close()


def test_misconfigured_key_sources_fail_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        JwksKeys(url="file:///etc/passwd")
    with pytest.raises(ValueError):
        JwksKeys()
    with pytest.raises(ValueError):
        Authenticator(algorithms=("RS256",))


# --- a real server -------------------------------------------------------------------------


async def test_a_server_accepts_jwks_signed_tokens_on_rest_and_websockets(
    provider: JwksServer, rsa_key: Key, tmp_path: Path
) -> None:
    process = ServerProcess(
        tmp_path / "data",
        env={
            "JWT_SECRET_KEY": "",  # the identity provider's keys only
            "CRDT_STATE_JWKS_URL": provider.url,
            "CRDT_STATE_JWT_ISSUER": ISSUER,
            "CRDT_STATE_JWT_AUDIENCE": "crdt-state",
            "CRDT_STATE_JWKS_MIN_REFRESH_SECONDS": "0.5",
        },
    ).start()
    try:
        token = rsa_key.token(iss=ISSUER, aud="crdt-state")
        peer = await RawPeer.open(f"{process.yjs_url('ws')}/p?token={token}")
        await peer.sync()
        await peer.set("from", "rs256")
        await peer.close()
        rotated = Key("ES256", "ec-rotated")
        provider.keys.append(rotated)
        await asyncio.sleep(0.6)  # past the refresh rate limit since the read at start
        headers = {"Authorization": f"Bearer {rotated.token(iss=ISSUER, aud='crdt-state')}"}
        answer = httpx.get(f"{process.http}/api/state/ws/p", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"]["$state"] == {"from": "rs256"}
        wrong_audience = rsa_key.token(iss=ISSUER, aud="another-api")
        refused_peer = await RawPeer.open(f"{process.yjs_url('ws')}/p?token={wrong_audience}")
        assert await refused_peer.closed_with() == 4401
        hs = {"Authorization": "Bearer " + jwt.encode({"sub": "x"}, "k" * 40, "HS256")}
        answer = httpx.get(f"{process.http}/api/state/ws/p", headers=hs)
        assert answer.status_code == 401
        assert "accepts only RS256, ES256, EdDSA" in answer.json()["message"]
        ready = httpx.get(f"{process.http}/ready").json()
        assert ready["jwks"]["status"] == "ok" and ready["jwks"]["keys"] == 4
    finally:
        process.stop()
