"""Bearer tokens: HS256 JWTs with `sub`, `roles` and `exp`, and the FastAPI dependencies that
turn them into a `Principal` with the role an endpoint needs.

Every failure to authenticate (no token, malformed, unsigned `alg: none`, wrongly signed,
expired, missing claims) is 401; a valid token without the endpoint's role is 403.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import PermissionDenied, Unauthenticated
from shared.validation import MAX_CUSTOMER_ID

CUSTOMER = "customer"
OPERATOR = "operator"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject (a customer id, or an operator's id) and roles."""

    sub: str
    roles: frozenset[str]


class TokenVerifier:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def verify(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
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
    if credentials is None:
        raise Unauthenticated("TOKEN_MISSING", "an Authorization: Bearer token is required")
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(credentials.credentials)


def _requiring(role: str) -> Any:
    def dependency(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if role not in principal.roles:
            raise PermissionDenied(f"{role.upper()}_ROLE_REQUIRED", f"this endpoint needs a token with role {role!r}")
        return principal

    return dependency


Customer = Annotated[Principal, Depends(_requiring(CUSTOMER))]
Operator = Annotated[Principal, Depends(_requiring(OPERATOR))]
