"""Start services in-process on port 0 against fresh databases.

`TEST_DATABASE_URL` unset: each service gets a SQLite file in the test's temporary folder.
`TEST_DATABASE_URL=postgresql://...`: each service gets a PostgreSQL database of its own,
created for the test and dropped after it.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import threading
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from sqlalchemy.engine import make_url

from shared.app import ServiceApp
from shared.clock import Clock, ManualClock
from shared.db import normalise_url
from shared.settings import SERVICES, ServiceSettings
from shared.telemetry import Telemetry

# The order in which services can start: each only calls services before it.
START_ORDER = ("points", "promotions", "wallet", "checkout")
UNREACHABLE = "127.0.0.1:1"


def test_database_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


def _ephemeral_ports() -> range:
    """The kernel's range for port 0 binds and outgoing connections (Linux default if unreadable)."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


# Ports for a service that must be known before it starts (a peer that starts later, a child
# process): taken below the ephemeral range, so no port 0 bind and no outgoing connection of any
# process can take one between this check and the service's own bind. Each process walks the
# range from its own random point, so two test processes (xdist workers, the two CI suites) do
# not hand out the same port either.
_ASSIGNED_LOW, _ASSIGNED_HIGH = 20_000, 32_000
_next_assigned = _ASSIGNED_LOW + random.SystemRandom().randrange(_ASSIGNED_HIGH - _ASSIGNED_LOW)
_assign_lock = threading.Lock()


def free_port() -> int:
    """A port nobody listens on now, outside the kernel's ephemeral range (see above)."""
    global _next_assigned
    ephemeral = _ephemeral_ports()
    with _assign_lock:
        for _ in range(_ASSIGNED_HIGH - _ASSIGNED_LOW):
            port = _next_assigned
            _next_assigned = _ASSIGNED_LOW + (_next_assigned + 1 - _ASSIGNED_LOW) % (_ASSIGNED_HIGH - _ASSIGNED_LOW)
            if port in ephemeral:
                continue
            with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    # The kernel's ephemeral range covers ours (or all of it is taken): let the kernel choose.
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


class Databases:
    """Hands out fresh databases and removes them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._server = test_database_url()
        self._created: list[str] = []

    @property
    def backend(self) -> str:
        return "postgresql" if self._server else "sqlite"

    def new(self, service: str) -> str:
        if self._server is None:
            return f"sqlite:///{self._tmp / f'{service}-{uuid.uuid4().hex[:8]}.db'}"
        name = f"test_{service}_{uuid.uuid4().hex[:12]}"
        with self._admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return make_url(normalise_url(self._server)).set(database=name).render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        assert self._server is not None
        url = make_url(normalise_url(self._server))
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    def set_accepting(self, url: str, accepting: bool) -> None:
        """Stop (or restart) a PostgreSQL database answering: the 'database is down' of tests."""
        name = make_url(url).database
        with self._admin() as connection:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(accepting).lower()}')
            if not accepting:
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    def drop_all(self) -> None:
        if not self._created:
            return
        with self._admin() as connection:
            for name in self._created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()


def service_settings(service: str, database_url: str, peers: Mapping[str, str], **overrides: str) -> ServiceSettings:
    environ = {
        f"{service.upper()}_PORT": "0",
        f"{service.upper()}_DATABASE_URL": database_url,
        "GRPC_MAX_WORKERS": "8",
        "GRPC_MAX_CONCURRENT_RPCS": "32",
        "DB_POOL_SIZE": "4",
        "HEALTH_PROBE_INTERVAL_MS": "100",
        "OUTBOX_POLL_INTERVAL_MS": "50",
        "PEER_DEADLINE_MS": "2000",
        "SHUTDOWN_GRACE_MS": "500",
        "OTEL_TRACES_EXPORTER": "none",
    }
    for peer in SERVICES:
        if peer != service:
            environ[f"{peer.upper()}_TARGET"] = peers.get(peer, UNREACHABLE)
    environ.update(overrides)
    return ServiceSettings.from_env(service, environ)


@dataclass
class RunningService:
    name: str
    app: ServiceApp
    port: int
    database_url: str
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.target)
        self.channels.append(channel)
        return channel

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.app.stop()


class Harness:
    """Starts services for one test and stops them all at its end."""

    def __init__(self, databases: Databases, clock: ManualClock) -> None:
        self.databases = databases
        self.clock = clock
        self.running: dict[str, RunningService] = {}
        self._all: list[RunningService] = []

    def start(
        self,
        service: str,
        *,
        database_url: str | None = None,
        peers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
        background_relay: bool = True,
        **overrides: str,
    ) -> RunningService:
        """Start `service` on a free port; peers default to the services already running here."""
        url = database_url or self.databases.new(service)
        targets = {name: svc.target for name, svc in self.running.items()}
        targets.update(peers or {})
        settings = service_settings(service, url, targets, **overrides)
        build = importlib.import_module(f"services.{service}.bootstrap").build
        app: ServiceApp = build(settings, clock=clock or self.clock, telemetry=telemetry)
        port = app.start(relay=background_relay)
        running = RunningService(service, app, port, url)
        self.running[service] = running
        self._all.append(running)
        return running

    def start_all(self) -> dict[str, RunningService]:
        for service in START_ORDER:
            self.start(service)
        return dict(self.running)

    def stop(self, service: str) -> None:
        self.running.pop(service).stop()

    def close(self) -> None:
        for svc in reversed(self._all):
            svc.stop()
        self.running.clear()
