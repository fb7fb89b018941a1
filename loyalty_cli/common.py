"""What every command shares: the settings, exit codes, errors, the gRPC calls, output."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from shared.errors import DomainError, InvalidArgument, PeerUnavailable
from shared.peers import Peers
from shared.settings import Env, SettingsError

Resp = TypeVar("Resp")

# Exit codes, the same for every command (`loyalty --help` lists them).
OK = 0
CHECK_FAILED = 1  # the command ran and its check failed: a reconciliation mismatch, a failed SRM
#                   check, rows refused by an import
USAGE = 2  # bad arguments or input: unknown option, unreadable CSV, a request the service calls invalid
UNAVAILABLE = 3  # a service (or a database) cannot be reached, or did not answer in time
REFUSED = 4  # the service refused the request: not found, wrong state, idempotency key reused, ...

EXIT_CODES = (
    f"Exit codes: {OK} done; {CHECK_FAILED} a check failed (reconciliation mismatch, SRM check failed, import rows "
    f"refused); {USAGE} usage or input error; {UNAVAILABLE} a service or database cannot be reached; {REFUSED} the "
    "service refused the request (not found, wrong state, key reused)."
)


class Failure(click.ClickException):
    """An error the command reports on stderr and ends with `exit_code`."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click ends with this code

    def show(self, file: Any = None) -> None:
        click.echo(f"loyalty: {self.format_message()}", err=True)


def refused(error: DomainError, *, service: str = "", target: str = "") -> Failure:
    """A service's error as the exit code and message a script can rely on."""
    if isinstance(error, PeerUnavailable):
        where = f"the {service} service at {target}" if service else "a service"
        return Failure(UNAVAILABLE, f"{where} cannot be reached ({error.reason}): {error.message}")
    code = USAGE if isinstance(error, InvalidArgument) else REFUSED
    fields = "".join(f"\n  {v.field}: {v.description}" for v in error.field_violations)
    return Failure(code, f"{error.reason}: {error.message}{fields}")


@dataclass
class Cli:
    """The context of one invocation (`click.Context.obj`)."""

    env: Env
    deadline_ms: int
    as_json: bool
    # Piped (a script, a log): wide enough that tables keep ids on one line.
    out: Console = field(default_factory=lambda: Console(highlight=False, width=None if sys.stdout.isatty() else 160))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def target(self, service: str) -> str:
        try:
            return self.env.text(f"{service.upper()}_TARGET")
        except SettingsError as error:
            raise Failure(USAGE, f"configuration: {error}") from None

    @contextmanager
    def peers(self, service: str) -> Iterator[Peers]:
        try:
            retries = self.env.integer("PEER_RETRY_ATTEMPTS", minimum=1)
        except SettingsError as error:
            raise Failure(USAGE, f"configuration: {error}") from None
        peers = Peers({service: self.target(service)}, deadline_ms=self.deadline_ms, retry_attempts=retries)
        try:
            yield peers
        finally:
            peers.close()

    def call(self, service: str, stub: Callable[[Any], Any], method: str, request: Message) -> Any:
        """One RPC (read, or a mutation with a request id: UNAVAILABLE is retried)."""
        with self.peers(service) as peers:
            try:
                return peers.call(getattr(peers.stub(service, stub), method), request, idempotent=True)
            except DomainError as error:
                raise refused(error, service=service, target=self.target(service)) from None

    def emit(self, message: Message | dict[str, Any]) -> None:
        """`--json`: the answer on stdout (protobuf's JSON mapping: 64-bit integers are strings)."""
        value = (
            message
            if isinstance(message, dict)
            else MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        )
        click.echo(json.dumps(value, sort_keys=True, ensure_ascii=False))

    @contextmanager
    def working(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr: `advance(completed)`; without a total, a spinner with the time
        taken (a job RPC reports only when it is done)."""
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.err, transient=False, disable=self.as_json) as progress:
            task = progress.add_task(description, total=total)

            def advance(completed: int) -> None:
                progress.update(task, completed=completed)

            yield advance
            progress.update(task, total=total or 1, completed=total or 1)


def request_id(given: str | None, *parts: str) -> str:
    """The idempotency key: the operator's, else a new one for this run."""
    return given or ":".join(["cli", *parts, uuid.uuid4().hex[:12]])


def aware(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=option) from None
    if instant.tzinfo is None:
        raise click.BadParameter(f"needs a UTC offset, e.g. {value}+03:00", param_hint=option)
    return instant


def fail(code: int, message: str) -> NoReturn:
    raise Failure(code, message)


def scaled(value: int, exponent: int, places: int) -> str:
    """value / 10**exponent, exactly, to `places` decimals (half away from zero), grouped."""
    amount = (Decimal(value).scaleb(-exponent)).quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP")
    return f"{amount:,.{places}f}"


def roubles(minor: int) -> str:
    return f"{scaled(minor, 2, 2)} RUB"
