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


# -- edge cases (issue 10) --------------------------------------------------------------------

# Taken when the module is imported, which may be many minutes before these tests run (pytest-xdist
# collects every module first): the good token lives a day, the "future" claims are hours ahead.
NOW = int(time.time())
GOOD = {"sub": "c", "roles": ["customer"], "exp": NOW + 86_400}


@pytest.mark.parametrize(
    ("case", "claims", "reason"),
    [
        ("nbf in the future", {**GOOD, "nbf": NOW + 43_200}, "TOKEN_INVALID"),
        ("iat in the future", {**GOOD, "iat": NOW + 43_200}, "TOKEN_INVALID"),
        ("expired beyond the leeway", {**GOOD, "exp": NOW - 30}, "TOKEN_EXPIRED"),
        ("exp as text", {**GOOD, "exp": str(NOW + 86_400)}, "TOKEN_INVALID"),
        ("nbf as text", {**GOOD, "nbf": "yesterday"}, "TOKEN_INVALID"),
        ("sub a number", {**GOOD, "sub": 42}, "TOKEN_INVALID"),
        ("sub blank", {**GOOD, "sub": "   "}, "TOKEN_INVALID"),
        ("roles a string", {**GOOD, "roles": "customer operator"}, "TOKEN_INVALID"),
        ("roles an object", {**GOOD, "roles": {"customer": True}}, "TOKEN_INVALID"),
        ("roles null", {**GOOD, "roles": None}, "TOKEN_INVALID"),
        ("an audience nobody configured", {**GOOD, "aud": "someone-else"}, "TOKEN_INVALID"),
    ],
)
def test_claims_that_are_early_late_or_ill_typed_are_refused(case: str, claims: dict[str, object], reason: str) -> None:
    assert refusal(jwt.encode(claims, SECRET, "HS256")) == reason, case


def test_with_an_audience_configured_only_tokens_for_it_pass() -> None:
    verifier = TokenVerifier(SECRET, audience="loyalty-gateway")
    assert verifier.verify(jwt.encode({**GOOD, "aud": "loyalty-gateway"}, SECRET, "HS256")).sub == "c"
    for aud in ("another-api", ["another-api"], None):
        claims = {**GOOD, "aud": aud} if aud is not None else GOOD
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(jwt.encode(claims, SECRET, "HS256"))
        assert caught.value.reason == "TOKEN_INVALID"


def test_an_rs256_token_without_a_jwks_is_refused_not_verified_with_the_secret() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refusal(jwt.encode(GOOD, key, "RS256", headers={"kid": "unknown-kid"})) == "TOKEN_INVALID"
    # and "RS256" in the header over an HMAC signature made with the secret is not accepted either
    header = b64({"alg": "RS256", "typ": "JWT", "kid": "k"})
    forged = jwt.encode(GOOD, SECRET, "HS256").split(".")
    assert refusal(f"{header}.{forged[1]}.{forged[2]}") == "TOKEN_INVALID"


@pytest.mark.parametrize(
    "token",
    [
        "x" * 100_000,  # huge
        "a." * 5000 + "b",
        b64({"alg": "HS256"}) + "." + "A" * 50_000 + ".sig",
        "\u202e\u0000.\U0001f600.\ud7ff",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjIn0",  # two parts
        b64({"alg": "HS256", "crit": ["exp"]}) + "." + b64(GOOD) + ".c2ln",
        b64({"alg": "HS256", "typ": "JWT", "kid": "../../etc/passwd"}) + "." + b64(GOOD) + ".c2ln",
    ],
)
def test_garbage_and_huge_tokens_are_refused_cleanly(token: str) -> None:
    assert refusal(token) == "TOKEN_INVALID"
