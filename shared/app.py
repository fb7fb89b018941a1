"""A service process: its runtime parts, start-up order, signals and graceful stop.

Each service's composition root (`services/<name>/bootstrap.py`) builds a `Runtime` (database,
idempotency, outbox and relay, peers, clock, tracing) and hands `ServiceApp` the servicers to
register. `main()` is the entry point of `python -m services.<name>` (`serve`, or `migrate`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.failpoints import FailpointInterceptor
from shared.idempotency import Idempotency
from shared.logs import configure_logging
from shared.migrations import upgrade
from shared.outbox import Outbox, OutboxRelay
from shared.peers import Peers
from shared.runtime_tables import RuntimeTables
from shared.server import GrpcServer
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry
from shared.workers import PeriodicWorker

log = logging.getLogger(__name__)
SIGNAL_POLL_SECONDS = 0.5  # how soon a stop signal taken by another thread is acted on


@dataclass
class Runtime:
    """The shared parts one service is made of."""

    settings: ServiceSettings
    clock: Clock
    db: Database
    telemetry: Telemetry
    peers: Peers
    idempotency: Idempotency
    outbox: Outbox
    relay: OutboxRelay

    @classmethod
    def create(
        cls,
        settings: ServiceSettings,
        tables: RuntimeTables,
        *,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
    ) -> Runtime:
        clock = clock or SystemClock()
        telemetry = telemetry or Telemetry(settings.service, environ=settings.env.values)
        db = Database(settings.database_url, pool_size=settings.db_pool_size)
        telemetry.instrument_engine(db.engine)
        telemetry.metrics.watch_database(db.engine)
        peers = Peers(
            settings.peer_targets,
            deadline_ms=settings.peer_deadline_ms,
            retry_attempts=settings.peer_retry_attempts,
            wrap_channel=telemetry.intercept_channel,
        )
        outbox = Outbox(tables.outbox, clock)
        relay = OutboxRelay(
            db,
            outbox,
            peers,
            clock,
            batch_size=settings.outbox_batch_size,
            poll_interval_ms=settings.outbox_poll_interval_ms,
            max_backoff_ms=settings.outbox_max_backoff_ms,
            lease_ms=settings.outbox_lease_ms,
            concurrency=settings.outbox_concurrency,
            tracer=telemetry.tracer,
            metrics=telemetry.metrics,
        )
        telemetry.metrics.observe_outbox(lambda: outbox.backlog(db))
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            telemetry=telemetry,
            peers=peers,
            idempotency=Idempotency(db, tables.idempotency, clock),
            outbox=outbox,
            relay=relay,
        )


class ServiceApp:
    """One running service: migrations, gRPC server, outbox relay."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        register: Callable[[grpc.Server], None],
        service_names: Sequence[str],
        migrations: Path,
        workers: Sequence[PeriodicWorker] = (),
    ) -> None:
        self.runtime = runtime
        self.workers = list(workers)
        self.migrations = migrations
        settings = runtime.settings
        self.server = GrpcServer(
            name=settings.service,
            bind_host=settings.bind_host,
            port=settings.port,
            max_workers=settings.max_workers,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
            max_connection_age_ms=settings.max_connection_age_ms,
            service_names=service_names,
            readiness_probe=runtime.db.ping,
            probe_interval_ms=settings.health_probe_interval_ms,
            interceptors=[runtime.telemetry.server_interceptor()],
            inner_interceptors=[runtime.telemetry.rpc_interceptor(), FailpointInterceptor(settings.service)],
        )
        register(self.server.server)
        self._stopped = threading.Event()

    def migrate(self) -> None:
        upgrade(self.runtime.db, self.migrations)

    def start(self, *, relay: bool = True) -> int:
        """Migrate (in dev), serve, and run the outbox relay and the periodic workers unless
        `relay` is False (tests that drive `relay.deliver_due()` and the jobs themselves)."""
        if self.runtime.settings.auto_migrate:
            self.migrate()
        port = self.server.start()
        self.runtime.telemetry.serve_metrics(self.runtime.settings.bind_host)
        if relay:
            self.runtime.relay.start()
            for worker in self.workers:
                worker.start()
        return port

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.server.stop(self.runtime.settings.shutdown_grace_ms)
        for worker in self.workers:
            worker.stop()
        self.runtime.relay.stop()
        self.runtime.peers.close()
        self.runtime.db.dispose()
        self.runtime.telemetry.shutdown()


def tune_garbage_collector(threshold: int) -> None:
    """Keep the cyclic garbage collector off the hot paths of a serving process.

    What start-up built (modules, SQLAlchemy metadata, protobuf descriptors, the app itself)
    lives as long as the process: frozen, the collector no longer walks it on every full
    collection. And the youngest generation is collected every `threshold` allocations instead
    of CPython's 700, which one batch of 1,000 credits crossed dozens of times: the collector
    was 7 % of the machine's CPU while interest was posted (perf, 100,000 wallets). Reference
    counting still frees everything that is not in a cycle at once."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


def main(service: str, build: Callable[[ServiceSettings], ServiceApp], argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}", description=f"The {service} service.")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve: run the gRPC server (default); migrate: apply schema migrations and exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = ServiceSettings.from_env(service)
    except SettingsError as error:
        print(f"{service}: configuration error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(service, level=settings.log_level, fmt=settings.log_format)
    app = build(settings)
    if args.command == "migrate":
        app.migrate()
        log.info("migrations applied")
        return 0

    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_garbage_collector(settings.gc_threshold)
    app.start()
    # Waited in short steps: the kernel may deliver SIGTERM to any of the process's threads
    # (gRPC's own included), and Python runs the handler only when the main thread next runs
    # its code. A wait without a timeout slept through such a signal for good (seen in CI: a
    # Points process that ignored SIGTERM for ten minutes, its main thread still waiting here).
    while not done.wait(SIGNAL_POLL_SECONDS):
        pass
    app.stop()
    log.info("stopped")
    return 0
