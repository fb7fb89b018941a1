"""Configuration from environment variables, read in one place.

Every variable the system reads is declared in `SETTINGS` with its default and meaning; the
README's configuration table is checked against this list by a test. A bad value fails start-up
with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICES = ("wallet", "points", "promotions", "checkout")

DEFAULT_PORTS = {"wallet": 50051, "points": 50052, "promotions": 50053, "checkout": 50054}
GATEWAY_DEFAULT_PORT = 8080


class SettingsError(ValueError):
    """A configuration variable is missing or malformed."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str


def _per_service() -> list[Setting]:
    rows: list[Setting] = []
    for svc in SERVICES:
        up = svc.upper()
        rows += [
            Setting(f"{up}_PORT", str(DEFAULT_PORTS[svc]), f"gRPC port of the {svc} service (0 picks a free one)."),
            Setting(
                f"{up}_DATABASE_URL",
                f"sqlite:///var/{svc}.db",
                f"{svc} database: `sqlite:///path` (embedded default) or `postgresql://user@host/db`.",
            ),
            Setting(f"{up}_TARGET", f"127.0.0.1:{DEFAULT_PORTS[svc]}", f"Where peers reach the {svc} service."),
        ]
    return rows


SETTINGS: tuple[Setting, ...] = (
    *_per_service(),
    Setting("GATEWAY_PORT", str(GATEWAY_DEFAULT_PORT), "HTTP port of the gateway."),
    Setting("GATEWAY_HOST", "127.0.0.1", "Interface the gateway's HTTP server listens on (`0.0.0.0` in a pod)."),
    Setting(
        "GATEWAY_JOB_DEADLINE_MS",
        "60000",
        "Deadline of the gateway's calls that run operator jobs (every other call uses PEER_DEADLINE_MS).",
    ),
    Setting(
        "GATEWAY_MAX_BODY_BYTES",
        "1048576",
        "Largest request body the gateway accepts (1 MiB); a larger one is 413 `BODY_TOO_LARGE`, refused "
        "from its Content-Length before it is read, or as soon as a streamed body passes the limit.",
    ),
    Setting(
        "GATEWAY_MAX_IMPORT_BODY_BYTES",
        "268435456",
        "Largest CSV body of `POST /v1/admin/customer-features/import` (256 MiB; it is streamed, not held).",
    ),
    Setting(
        "GATEWAY_RATE_LIMIT_PER_SECOND",
        "10",
        "Requests per second each customer (token subject) may make, and each client IP without a valid "
        "token; over it the answer is 429 `RATE_LIMITED` with Retry-After. 0 turns the limit off.",
    ),
    Setting(
        "GATEWAY_RATE_LIMIT_BURST", "40", "Requests a customer or client IP may make at once before the rate applies."
    ),
    Setting(
        "GATEWAY_OPERATOR_RATE_LIMIT_PER_SECOND",
        "50",
        "Requests per second of each operator (a token with role operator), limited apart from customers; 0: off.",
    ),
    Setting(
        "GATEWAY_OPERATOR_RATE_LIMIT_BURST", "200", "Requests an operator may make at once before the rate applies."
    ),
    Setting(
        "LOYALTY_ENV",
        "production",
        "`dev` lets the gateway fall back to the documented dev JWT secret (`make run` sets it); anything else "
        "requires LOYALTY_JWT_SECRET.",
    ),
    Setting(
        "LOYALTY_JWT_SECRET",
        "",
        "HS256 secret the gateway verifies bearer tokens with (at least 32 bytes); required outside dev.",
    ),
    Setting(
        "LOYALTY_JWKS_URL",
        "",
        "Optional JWKS URL of an identity provider: the gateway then also accepts its RS256 tokens (key by `kid`).",
    ),
    Setting(
        "LOYALTY_JWT_AUDIENCE",
        "",
        "When set, tokens must carry this `aud`; when empty, tokens with an `aud` are refused.",
    ),
    Setting("GRPC_BIND_HOST", "127.0.0.1", "Interface the gRPC servers listen on (`0.0.0.0` in a pod)."),
    Setting("GRPC_MAX_WORKERS", "16", "Threads serving RPCs per service."),
    Setting(
        "GRPC_MAX_CONCURRENT_RPCS",
        "64",
        "RPCs admitted at once per service; more are refused with RESOURCE_EXHAUSTED instead of queueing.",
    ),
    Setting(
        "GRPC_MAX_CONNECTION_AGE_MS",
        "0",
        "Close client connections after this long (0: never), so callers re-resolve and spread over new replicas.",
    ),
    Setting("PEER_DEADLINE_MS", "3000", "Deadline of every call to a peer service."),
    Setting("PEER_RETRY_ATTEMPTS", "3", "Attempts of an idempotent peer call that meets UNAVAILABLE."),
    Setting(
        "DB_AUTO_MIGRATE",
        "true",
        "Apply schema migrations on start (dev); `false` in production, where `migrate` runs them.",
    ),
    Setting("DB_POOL_SIZE", "10", "Connections per service to PostgreSQL."),
    Setting("HEALTH_PROBE_INTERVAL_MS", "1000", "How often the health service checks the database."),
    Setting(
        "GC_THRESHOLD",
        "50000",
        "Allocations between the interpreter's youngest garbage collections (CPython's default is 700).",
    ),
    Setting("OUTBOX_POLL_INTERVAL_MS", "200", "How often the outbox relay looks for due messages."),
    Setting("OUTBOX_BATCH_SIZE", "100", "Messages the relay claims per pass."),
    Setting(
        "OUTBOX_CONCURRENCY",
        "4",
        "Messages the relay delivers at once (threads); each is applied once by its request id, in any order.",
    ),
    Setting("OUTBOX_MAX_BACKOFF_MS", "60000", "Ceiling of the relay's exponential backoff between attempts."),
    Setting(
        "OUTBOX_LEASE_MS",
        "30000",
        "How long a relay owns the messages it claimed; a relay that dies delays them this long. "
        "Above PEER_DEADLINE_MS.",
    ),
    Setting("SHUTDOWN_GRACE_MS", "5000", "Time in-flight RPCs get to finish after SIGTERM."),
    Setting("LOG_LEVEL", "INFO", "Python log level of every process."),
    Setting("LOG_FORMAT", "json", "`json` (one object per line, with trace_id/span_id) or `text`."),
    Setting("POINTS_DEFAULT_EXPIRY_DAYS", "365", "Lifetime of a points lot when its source sets none."),
    Setting(
        "POINTS_EXPIRY_DAYS_BY_SOURCE",
        "",
        "Per-source lifetimes overriding the default, e.g. `PROMO_CODE=90,CAMPAIGN=60`.",
    ),
    Setting("POINTS_HOLD_TTL_SECONDS", "900", "Life of a points hold when the caller sets no TTL."),
    Setting("POINTS_TIME_ZONE", "Europe/Moscow", "Programme time zone: the days of the expiring-points list."),
    Setting("POINTS_JOB_BATCH_SIZE", "200", "Customers settled per transaction by the activation and hold jobs."),
    Setting("POINTS_EXPIRY_CHUNK_SIZE", "10000", "Lots written off per transaction by the set-based expiry job."),
    Setting(
        "POINTS_EXPIRY_WORKERS",
        "2",
        "Threads sharing the expiry job, each the customers of one hash part (never the same account).",
    ),
    Setting("PROMOTIONS_REWARD_CONTACTS_UPDATED", "50", "Points for updating contact details (once per customer)."),
    Setting("PROMOTIONS_REWARD_PHOTO_ADDED", "50", "Points for adding a profile photo (once per customer)."),
    Setting("PROMOTIONS_REWARD_SURVEY_COMPLETED", "100", "Points for completing a survey (once per survey)."),
    Setting(
        "PROMOTIONS_DEFAULT_APR_BPS",
        "1200",
        "Default mechanic until an operator sets one (SetDefaultMechanic): interest APR in basis points, at most 1800.",
    ),
    Setting(
        "PROMOTIONS_DEFAULT_INTEREST_BASIS",
        "AVERAGE_DAILY",
        "Balance basis of that configured default: `AVERAGE_DAILY` or `MINIMUM_DAILY`.",
    ),
    Setting(
        "PROMOTIONS_TIME_ZONE",
        "Europe/Moscow",
        "Programme time zone of promotions: months of mechanic look-ups and of the monthly cashback cap.",
    ),
    Setting(
        "PROMOTIONS_RESERVATION_TTL_SECONDS",
        "900",
        "Life of a promo code reservation when the caller sets no TTL; ReleaseExpiredReservations frees it after.",
    ),
    Setting(
        "WALLET_DEFAULT_APR_BPS",
        "1200",
        "Default mechanic for customers in no experiment: interest APR in basis points.",
    ),
    Setting(
        "WALLET_DEFAULT_INTEREST_BASIS",
        "AVERAGE_DAILY",
        "Balance basis of the default interest mechanic: `AVERAGE_DAILY` or `MINIMUM_DAILY`.",
    ),
    Setting(
        "WALLET_TIME_ZONE",
        "Europe/Moscow",
        "Programme time zone of the wallet: calendar days (daily top-up limit, end-of-day balances) and months.",
    ),
    Setting(
        "WALLET_INTEREST_CHUNK_SIZE",
        "10000",
        "Wallets posted per transaction (with their outbox messages) by interest.",
    ),
    Setting("WALLET_MIN_TOP_UP_MINOR", "10000", "Smallest single wallet top-up, in kopecks (100 RUB)."),
    Setting("WALLET_MAX_TOP_UP_MINOR", "15000000", "Largest single wallet top-up, in kopecks (150,000 RUB)."),
    Setting(
        "WALLET_DAILY_TOP_UP_LIMIT_MINOR",
        "30000000",
        "Most a customer can top up per calendar day, in kopecks (300,000 RUB); pending top-ups count.",
    ),
    Setting(
        "WALLET_MAX_BALANCE_MINOR",
        "60000000",
        "Largest balance a wallet may reach by top-ups, in kopecks (600,000 RUB).",
    ),
    Setting(
        "WALLET_HOLD_TTL_SECONDS", "900", "Default lifetime of a money hold before ReleaseExpiredHolds releases it."
    ),
    Setting("CHECKOUT_MIN_MONEY_PER_UNIT_MINOR", "100", "Least money every unit of a cart is paid with, in kopecks."),
    Setting("CHECKOUT_MAX_POINTS_SHARE_BPS", "9900", "Most of a cart payable with points, in basis points (99 %)."),
    Setting(
        "CHECKOUT_POINTS_EXCLUDED_CATEGORIES",
        "gift-cards",
        "Comma-separated categories that points cannot pay for.",
    ),
    Setting(
        "CHECKOUT_RETURN_WINDOW_DAYS", "14", "Days after delivery units can be returned; earned points wait for it."
    ),
    Setting("CHECKOUT_HOLD_TTL_SECONDS", "900", "Life of the points and money holds an order's saga makes."),
    Setting(
        "CHECKOUT_SAGA_LEASE_SECONDS",
        "30",
        "How long one driver owns an order's saga without moving it before recovery may take it over.",
    ),
    Setting(
        "CHECKOUT_RECOVERY_STUCK_SECONDS",
        "30",
        "RecoverOrders (and the recovery worker) takes sagas that have not moved for this long.",
    ),
    Setting(
        "CHECKOUT_RECOVERY_INTERVAL_SECONDS",
        "10",
        "How often the recovery worker runs (also once at start-up); 0 turns it off.",
    ),
    Setting(
        "CHECKOUT_SAGA_TIMEOUT_SECONDS",
        "600",
        "A PENDING order older than this is compensated by recovery instead of being driven forward.",
    ),
    Setting(
        "FAILPOINTS",
        "",
        "Tests only: comma-separated failpoints `name[=action]` (kill, sleep:<ms>, unavailable, deadline; "
        "`*n`: n times), e.g. `checkout.saga.after.HOLD_MONEY` or `points.rpc.CreditPoints.after=kill` "
        "(shared/failpoints.py).",
    ),
    Setting("OTEL_SERVICE_NAME", "<service>", "Service name on traces (defaults to the service's own)."),
    Setting("OTEL_TRACES_EXPORTER", "none", "`otlp`, `console` or `none`."),
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317", "OTLP/gRPC collector endpoint."),
    Setting("OTEL_TRACES_SAMPLER", "parentbased_always_on", "Standard OpenTelemetry sampler name."),
    Setting("OTEL_TRACES_SAMPLER_ARG", "1.0", "Ratio of the `traceidratio` samplers, between 0 and 1."),
    Setting(
        "OTEL_METRICS_EXPORTER",
        "none",
        "`otlp` (push to OTEL_EXPORTER_OTLP_ENDPOINT), `console` or `none`; the Prometheus endpoint is METRICS_PORT.",
    ),
    Setting(
        "METRICS_PORT",
        "",
        "Port of the Prometheus scrape endpoint `/metrics` of a service (empty or 0: none); `9464` in a pod.",
    ),
    Setting("POD_NAME", "", "Set by Kubernetes (downward API): the pod's name, `k8s.pod.name` on traces and metrics."),
    Setting(
        "POD_NAMESPACE",
        "",
        "Set by Kubernetes (downward API): the namespace, `k8s.namespace.name` on traces and metrics.",
    ),
    Setting(
        "JOB_NAME",
        "",
        "`python -m shared.jobs`: the Job's name, set by the CronJob; its schedule suffix keys the run's request id.",
    ),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True)
class Env:
    """Typed access to a mapping of environment variables with the declared defaults."""

    values: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def text(self, name: str) -> str:
        if name not in _DEFAULTS:
            raise SettingsError(f"{name} is not a declared setting")
        return self.values.get(name, _DEFAULTS[name]).strip()

    def integer(self, name: str, *, minimum: int = 0) -> int:
        raw = self.text(name)
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        return value

    def flag(self, name: str) -> bool:
        raw = self.text(name).lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything one service process needs to start."""

    service: str
    port: int
    bind_host: str
    database_url: str
    auto_migrate: bool
    db_pool_size: int
    max_workers: int
    max_concurrent_rpcs: int
    max_connection_age_ms: int
    peer_targets: Mapping[str, str]
    peer_deadline_ms: int
    peer_retry_attempts: int
    health_probe_interval_ms: int
    gc_threshold: int
    outbox_poll_interval_ms: int
    outbox_batch_size: int
    outbox_max_backoff_ms: int
    outbox_lease_ms: int
    outbox_concurrency: int
    shutdown_grace_ms: int
    log_level: str
    log_format: str
    env: Env

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        if service not in SERVICES:
            raise SettingsError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
        env = Env(dict(os.environ) if environ is None else environ)
        up = service.upper()
        log_format = env.text("LOG_FORMAT").lower()
        if log_format not in ("json", "text"):
            raise SettingsError(f"LOG_FORMAT must be json or text, got {log_format!r}")
        return cls(
            service=service,
            port=env.integer(f"{up}_PORT"),
            bind_host=env.text("GRPC_BIND_HOST"),
            database_url=env.text(f"{up}_DATABASE_URL"),
            auto_migrate=env.flag("DB_AUTO_MIGRATE"),
            db_pool_size=env.integer("DB_POOL_SIZE", minimum=1),
            max_workers=env.integer("GRPC_MAX_WORKERS", minimum=1),
            max_concurrent_rpcs=env.integer("GRPC_MAX_CONCURRENT_RPCS", minimum=1),
            max_connection_age_ms=env.integer("GRPC_MAX_CONNECTION_AGE_MS"),
            peer_targets={p: env.text(f"{p.upper()}_TARGET") for p in SERVICES if p != service},
            peer_deadline_ms=env.integer("PEER_DEADLINE_MS", minimum=1),
            peer_retry_attempts=env.integer("PEER_RETRY_ATTEMPTS", minimum=1),
            health_probe_interval_ms=env.integer("HEALTH_PROBE_INTERVAL_MS", minimum=10),
            gc_threshold=env.integer("GC_THRESHOLD", minimum=100),
            outbox_poll_interval_ms=env.integer("OUTBOX_POLL_INTERVAL_MS", minimum=10),
            outbox_batch_size=env.integer("OUTBOX_BATCH_SIZE", minimum=1),
            outbox_max_backoff_ms=env.integer("OUTBOX_MAX_BACKOFF_MS", minimum=10),
            outbox_lease_ms=env.integer("OUTBOX_LEASE_MS", minimum=100),
            outbox_concurrency=env.integer("OUTBOX_CONCURRENCY", minimum=1),
            shutdown_grace_ms=env.integer("SHUTDOWN_GRACE_MS"),
            log_level=env.text("LOG_LEVEL").upper(),
            log_format=log_format,
            env=env,
        )
