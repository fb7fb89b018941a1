"""Bearer tokens and the gateway's start-up rule for the secret."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from gateway.auth import TokenVerifier, mint_token
from gateway.settings import DEV_JWT_SECRET, GatewaySettings
from shared.errors import Unauthenticated
from shared.settings import SettingsError

SECRET = "unit-test-secret-long-enough-for-hs256-and-even-for-hs512-signatures"


def refusal(token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(SECRET).verify(token)
    return caught.value.reason


def b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def test_a_good_token_gives_its_subject_and_roles() -> None:
    principal = TokenVerifier(SECRET).verify(mint_token(SECRET, "cust-1", ["customer", "beta"]))
    assert (principal.sub, principal.roles) == ("cust-1", frozenset({"customer", "beta"}))


def test_an_expired_token_is_refused() -> None:
    token = jwt.encode({"sub": "c", "roles": ["customer"], "exp": int(time.time()) - 60}, SECRET, "HS256")
    assert refusal(token) == "TOKEN_EXPIRED"


def test_an_unsigned_alg_none_token_is_refused() -> None:
    claims = {"sub": "c", "roles": ["operator"], "exp": int(time.time()) + 600}
    assert refusal(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.") == "TOKEN_INVALID"
    assert refusal(jwt.encode(claims, "", algorithm="none")) == "TOKEN_INVALID"


def test_a_token_signed_with_another_key_or_algorithm_is_refused() -> None:
    claims = {"sub": "c", "roles": ["customer"], "exp": int(time.time()) + 600}
    assert refusal(jwt.encode(claims, "another-secret-that-is-also-long-enough", "HS256")) == "TOKEN_INVALID"
    assert refusal(jwt.encode(claims, SECRET, "HS512")) == "TOKEN_INVALID"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "Bearer x", "é.é.é", "e30.e30.", "..."])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refusal(token) == "TOKEN_INVALID"


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": ["customer"]},  # no sub
        {"sub": "c"},  # no roles
        {"sub": "", "roles": ["customer"]},
        {"sub": "x" * 65, "roles": ["customer"]},
        {"sub": "c", "roles": "customer"},  # not a list
        {"sub": "c", "roles": [1]},
    ],
)
def test_tokens_without_usable_claims_are_refused(claims: dict[str, object]) -> None:
    assert refusal(jwt.encode({**claims, "exp": int(time.time()) + 600}, SECRET, "HS256")) == "TOKEN_INVALID"


def test_a_token_without_exp_is_refused() -> None:
    assert refusal(jwt.encode({"sub": "c", "roles": ["customer"]}, SECRET, "HS256")) == "TOKEN_INVALID"


def test_outside_dev_the_gateway_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(SettingsError, match="LOYALTY_JWT_SECRET is required"):
        GatewaySettings.from_env({})
    with pytest.raises(SettingsError, match="LOYALTY_JWT_SECRET is required"):
        GatewaySettings.from_env({"LOYALTY_ENV": "staging"})


def test_dev_uses_the_documented_secret_and_a_set_secret_wins() -> None:
    assert GatewaySettings.from_env({"LOYALTY_ENV": "dev"}).jwt_secret == DEV_JWT_SECRET
    assert GatewaySettings.from_env({"LOYALTY_ENV": "dev", "LOYALTY_JWT_SECRET": SECRET}).jwt_secret == SECRET
    assert GatewaySettings.from_env({"LOYALTY_JWT_SECRET": SECRET}).jwt_secret == SECRET


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        GatewaySettings.from_env({"LOYALTY_JWT_SECRET": "short"})


def test_python_m_gateway_exits_with_a_configuration_error_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.__main__ import main

    monkeypatch.delenv("LOYALTY_JWT_SECRET", raising=False)
    monkeypatch.setenv("LOYALTY_ENV", "production")
    assert main(["serve"]) == 2
