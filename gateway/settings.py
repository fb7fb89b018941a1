"""The gateway's configuration, read from the variables declared in `shared.settings.SETTINGS`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.limits import Rate
from shared.settings import SERVICES, Env, SettingsError

# The documented development secret: `LOYALTY_ENV=dev` (what `make run` sets) uses it when
# LOYALTY_JWT_SECRET is empty. Anyone can read it here, so tokens signed with it prove nothing
# outside a laptop; every other environment must set its own secret.
DEV_JWT_SECRET = "loyalty-dev-only-secret-never-use-outside-a-laptop"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class GatewaySettings:
    host: str
    port: int
    targets: Mapping[str, str]
    deadline_ms: int
    job_deadline_ms: int
    retry_attempts: int
    jwt_secret: str
    jwks_url: str
    jwt_audience: str
    environment: str
    log_level: str
    log_format: str
    max_body_bytes: int
    max_import_body_bytes: int
    customer_rate: Rate
    operator_rate: Rate

    @property
    def dev(self) -> bool:
        return self.environment == "dev"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env(dict(os.environ) if environ is None else environ)
        environment = env.text("LOYALTY_ENV").lower()
        secret = env.text("LOYALTY_JWT_SECRET")
        if not secret:
            if environment != "dev":
                raise SettingsError(
                    "LOYALTY_JWT_SECRET is required outside LOYALTY_ENV=dev: the gateway will not accept tokens "
                    "signed with the published dev secret"
                )
            secret = DEV_JWT_SECRET
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"LOYALTY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        log_format = env.text("LOG_FORMAT").lower()
        if log_format not in ("json", "text"):
            raise SettingsError(f"LOG_FORMAT must be json or text, got {log_format!r}")
        return cls(
            host=env.text("GATEWAY_HOST"),
            port=env.integer("GATEWAY_PORT"),
            targets={name: env.text(f"{name.upper()}_TARGET") for name in SERVICES},
            deadline_ms=env.integer("PEER_DEADLINE_MS", minimum=1),
            job_deadline_ms=env.integer("GATEWAY_JOB_DEADLINE_MS", minimum=1),
            retry_attempts=env.integer("PEER_RETRY_ATTEMPTS", minimum=1),
            jwt_secret=secret,
            jwks_url=env.text("LOYALTY_JWKS_URL"),
            jwt_audience=env.text("LOYALTY_JWT_AUDIENCE"),
            environment=environment,
            log_level=env.text("LOG_LEVEL").upper(),
            log_format=log_format,
            max_body_bytes=env.integer("GATEWAY_MAX_BODY_BYTES", minimum=1),
            max_import_body_bytes=env.integer("GATEWAY_MAX_IMPORT_BODY_BYTES", minimum=1),
            customer_rate=Rate(env.integer("GATEWAY_RATE_LIMIT_PER_SECOND"), env.integer("GATEWAY_RATE_LIMIT_BURST")),
            operator_rate=Rate(
                env.integer("GATEWAY_OPERATOR_RATE_LIMIT_PER_SECOND"), env.integer("GATEWAY_OPERATOR_RATE_LIMIT_BURST")
            ),
        )
