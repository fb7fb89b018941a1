"""RS256 tokens of an identity provider, verified with the keys its JWKS endpoint publishes
(served here by a local HTTP server), next to the gateway's own HS256 tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.auth import TokenVerifier, mint_token
from shared.errors import PeerUnavailable, Unauthenticated
from tests.harness import free_port

SECRET = "unit-test-secret-long-enough-for-hs256-and-even-for-hs512-signatures"
PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "cust-7", "roles": ["customer"], "exp": int(time.time()) + 600, **extra}


def provider_token(key: rsa.RSAPrivateKey = PROVIDER_KEY, kid: str = "key-1", **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(PROVIDER_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "key-1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_a_provider_token_verifies_with_the_published_key(jwks_url: str) -> None:
    verifier = TokenVerifier(SECRET, jwks_url=jwks_url)
    assert verifier.verify(provider_token()).sub == "cust-7"
    assert verifier.verify(mint_token(SECRET, "op", ["operator"])).roles == frozenset({"operator"})  # HS256 still


def test_provider_tokens_with_another_key_an_unknown_kid_or_no_jwks_are_refused(jwks_url: str) -> None:
    verifier = TokenVerifier(SECRET, jwks_url=jwks_url)
    assert refusal(verifier, provider_token(STRANGER_KEY)) == "TOKEN_INVALID"
    assert refusal(verifier, provider_token(kid="key-9")) == "TOKEN_INVALID"
    assert refusal(TokenVerifier(SECRET), provider_token()) == "TOKEN_INVALID"


def test_the_public_key_cannot_be_used_as_an_hs256_secret(jwks_url: str) -> None:
    public_pem = PROVIDER_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-1"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signature = jwt.utils.base64url_encode(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest())
    forged = (header + b"." + payload + b"." + signature).decode()
    assert refusal(TokenVerifier(SECRET, jwks_url=jwks_url), forged) == "TOKEN_INVALID"


def test_the_audience_is_checked_when_configured(jwks_url: str) -> None:
    verifier = TokenVerifier(SECRET, jwks_url=jwks_url, audience="loyalty-gateway")
    assert verifier.verify(provider_token(aud="loyalty-gateway")).sub == "cust-7"
    assert refusal(verifier, provider_token(aud="another-api")) == "TOKEN_INVALID"
    assert refusal(verifier, provider_token()) == "TOKEN_INVALID"
    assert refusal(TokenVerifier(SECRET, jwks_url=jwks_url), provider_token(aud="another-api")) == "TOKEN_INVALID"


def test_an_unreachable_jwks_endpoint_is_unavailable_not_unauthenticated() -> None:
    verifier = TokenVerifier(SECRET, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    with pytest.raises(PeerUnavailable) as caught:
        verifier.verify(provider_token())
    assert caught.value.reason == "JWKS_UNAVAILABLE"
