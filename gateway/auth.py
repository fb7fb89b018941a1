"""Bearer tokens: JWTs with `sub`, `roles` and `exp`, and the FastAPI dependencies that turn
them into a `Principal` with the role an endpoint needs.

HS256 tokens are verified with the shared secret. When a JWKS URL is configured, RS256 tokens are
verified with the identity provider's public key named by the token's `kid`. Each algorithm is
verified only with its own kind of key, so a token cannot pick its key (no HS256 token "signed"
with the provider's public key).

Every failure to authenticate (no token, malformed, unsigned `alg: none`, wrongly signed,
expired, missing claims) is 401; a valid token without the endpoint's role is 403; a JWKS endpoint
that cannot be reached is 503.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.limits import RateLimiter
from shared.errors import PeerUnavailable, PermissionDenied, Unauthenticated
from shared.validation import MAX_CUSTOMER_ID

CUSTOMER = "customer"
OPERATOR = "operator"
ALGORITHM = "HS256"
PROVIDER_ALGORITHM = "RS256"
LEEWAY_SECONDS = 5
JWKS_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject (a customer id, or an operator's id) and roles."""

    sub: str
    roles: frozenset[str]


class TokenVerifier:
    def __init__(self, secret: str, *, jwks_url: str = "", audience: str = "") -> None:
        self._secret = secret
        self._audience = audience or None
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=JWKS_TIMEOUT_SECONDS) if jwks_url else None
        )

    def _key(self, token: str) -> tuple[Any, str]:
        """The key and the one algorithm a token may be verified with."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as error:
            raise Unauthenticated("TOKEN_INVALID", f"the bearer token is not valid: {error}") from None
        if algorithm == PROVIDER_ALGORITHM and self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key, PROVIDER_ALGORITHM
            except jwt.PyJWKClientConnectionError as error:
                raise PeerUnavailable(
                    "JWKS_UNAVAILABLE", f"the identity provider's keys cannot be read: {error}"
                ) from None
            except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
                raise Unauthenticated("TOKEN_INVALID", f"the bearer token's key is not known: {error}") from None
        return self._secret, ALGORITHM

    def verify(self, token: str) -> Principal:
        key, algorithm = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                options={"require": ["sub", "roles", "exp"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("TOKEN_EXPIRED", "the bearer token has expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("TOKEN_INVALID", "the bearer token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated("TOKEN_INVALID", f"the bearer token lacks the {error.claim!r} claim") from None
        except jwt.InvalidTokenError as error:  # malformed, alg none or another algorithm, bad iat/nbf
            raise Unauthenticated("TOKEN_INVALID", f"the bearer token is not valid: {error}") from None
        for name in ("exp", "nbf", "iat"):  # NumericDate is a JSON number (PyJWT also takes "123")
            if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int | float)):
                raise Unauthenticated("TOKEN_INVALID", f"the token's {name} must be a number of seconds")
        sub, roles = claims.get("sub"), claims.get("roles")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_CUSTOMER_ID:
            raise Unauthenticated("TOKEN_INVALID", f"the token's sub must be 1 to {MAX_CUSTOMER_ID} characters")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated("TOKEN_INVALID", "the token's roles must be a list of strings")
        return Principal(sub=sub, roles=frozenset(roles))


def mint_token(secret: str, sub: str, roles: Iterable[str], *, ttl_seconds: int = 12 * 3600) -> str:
    """A signed token (for `make run`, `python -m gateway token` and tests)."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "roles": list(roles), "iat": now, "exp": now + ttl_seconds}, secret, ALGORITHM)


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <JWT>` (HS256; claims sub, roles, exp)")


def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller, after spending one request of their rate: a customer's or operator's own bucket
    (by subject), or the client IP's when the request carries no valid token (so a client guessing
    tokens meets 429 too)."""
    limiter: RateLimiter = request.app.state.limiter
    settings = request.app.state.settings
    try:
        if credentials is None:
            raise Unauthenticated("TOKEN_MISSING", "an Authorization: Bearer token is required")
        verifier: TokenVerifier = request.app.state.verifier
        principal = verifier.verify(credentials.credentials)
    except Unauthenticated:
        limiter.take(f"ip:{request.client.host if request.client else 'unknown'}", settings.customer_rate)
        raise
    if OPERATOR in principal.roles:
        limiter.take(f"operator:{principal.sub}", settings.operator_rate)
    else:
        limiter.take(f"sub:{principal.sub}", settings.customer_rate)
    return principal


def _requiring(role: str) -> Any:
    def dependency(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if role not in principal.roles:
            raise PermissionDenied(f"{role.upper()}_ROLE_REQUIRED", f"this endpoint needs a token with role {role!r}")
        return principal

    return dependency


Customer = Annotated[Principal, Depends(_requiring(CUSTOMER))]
Operator = Annotated[Principal, Depends(_requiring(OPERATOR))]
