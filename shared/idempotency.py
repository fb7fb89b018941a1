"""Idempotent mutations (AIP-155).

The request id and a fingerprint of the request are stored in the same transaction as the
effect, together with the serialized answer. A replay of the same request returns the first
answer and changes nothing; the same id with a different request is rejected with
ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED.

`run` inserts the key with the answer after the effect, in one statement (`INSERT ... ON
CONFLICT DO NOTHING RETURNING`), and commits both only if that inserted it. Otherwise the key
was there already, or a concurrent first attempt held it (the insert waits for that transaction
on the primary key, and finds it once it commits): the effect is rolled back and the stored answer
returned. So two concurrent first attempts cannot both take effect, and a new request costs one
statement for its key, where claiming the key first and storing the answer later cost two. A
replay runs the effect before it learns it is one; when the effect refuses (a hold already
captured, a unique row already there), the stored answer is looked for before the refusal is
returned. Effects must therefore only change the database: a call to the outside world belongs
before the transaction, behind `replay` (as the acquirer's is).

A request that fails with a domain error leaves no key behind (its transaction rolled back with
everything else), so it may be retried with the same id once the cause is fixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Table, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import bulk
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import AlreadyExists, DomainError, Internal, InvalidArgument

R = TypeVar("R", bound=Message)
Stored = tuple[str, bytes | None]  # (request fingerprint, serialized answer)

MAX_REQUEST_ID_LENGTH = 128


def request_fingerprint(request: Message) -> str:
    """SHA-256 of the request without its request id, in deterministic wire form."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def validate_request_id(request_id: str) -> None:
    if not request_id.strip():
        raise InvalidArgument.field("request_id", "is required for a mutating call", "REQUEST_ID_REQUIRED")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument.field(
            "request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters", "REQUEST_ID_TOO_LONG"
        )


class Idempotency:
    """Runs mutations once per (scope, request id) against one service database."""

    def __init__(self, database: Database, table: Table, clock: Clock) -> None:
        self._db = database
        self._table = table
        self._clock = clock
        # Statements of every mutation, built once with bind parameters: building a statement
        # per call costs more CPU than running its cached compiled form.
        t = table.c
        key = (t.scope == bindparam("key_scope"), t.request_id == bindparam("key_request_id"))
        dialect = postgresql if database.dialect == "postgresql" else sqlite
        self._insert_new = (
            dialect.insert(table).on_conflict_do_nothing(index_elements=["scope", "request_id"]).returning(t.request_id)
        )
        self._insert_answer = self._insert_new.values(
            scope=bindparam("key_scope"),
            request_id=bindparam("key_request_id"),
            request_hash=bindparam("key_hash"),
            response=bindparam("key_response"),
            created_at=bindparam("key_now", type_=t.created_at.type),
        )
        self._store_answer = update(table).where(*key).values(response=bindparam("key_response"))
        self._select_stored = select(t.request_hash, t.response).where(*key)

    def run(
        self,
        scope: str,
        request: Message,
        response_type: type[R],
        effect: Callable[[UnitOfWork], R],
    ) -> R:
        """Apply `effect` in one transaction with the key, or return the stored first answer."""
        request_id: str = request.request_id  # type: ignore[attr-defined]
        validate_request_id(request_id)
        fingerprint = request_fingerprint(request)
        for _ in range(3):
            refusal: DomainError | IntegrityError | None = None
            with self._db.unit_of_work() as uow:
                try:
                    response = effect(uow)
                except (DomainError, IntegrityError) as error:
                    refusal = error  # perhaps because the request was made before: looked at below
                else:
                    if self._insert_key(uow, scope, request_id, fingerprint, response):
                        uow.commit()
                        return response
            # Rolled back. The key is there (used before, or by a concurrent first attempt that
            # has committed meanwhile), or the effect refused a new request.
            stored = self._stored_alone(scope, request_id)
            if stored is not None:
                return self._replay(stored, fingerprint, response_type, request_id)
            if refusal is not None:
                raise refusal
            # The key was taken and is gone again (`forget`): try again.
        raise Internal("IDEMPOTENCY_RACE", f"request {request_id} kept racing with itself")

    def replay(self, scope: str, request: Message, response_type: type[R]) -> R | None:
        """The stored answer to `request`, or None when its id is new.

        For effects that must talk to the outside world (an acquirer) before their transaction:
        a replay is answered before anything is sent again. Raises IDEMPOTENCY_KEY_REUSED as
        `run` does."""
        request_id: str = request.request_id  # type: ignore[attr-defined]
        validate_request_id(request_id)
        stored = self._stored_alone(scope, request_id)
        if stored is None:
            return None
        return self._replay(stored, request_fingerprint(request), response_type, request_id)

    def forget(self, uow: UnitOfWork, scope: str, request_id: str) -> None:
        """Drop a key whose effect is being undone in `uow` (an external step refused after the
        key was committed), so the request counts as never made and may be retried."""
        uow.session.execute(
            delete(self._table).where(self._table.c.scope == scope, self._table.c.request_id == request_id)
        )

    def run_nested(
        self,
        uow: UnitOfWork,
        scope: str,
        request: Message,
        response_type: type[R],
        effect: Callable[[UnitOfWork], R],
    ) -> R:
        """Like `run`, inside the caller's transaction, under a savepoint: one item of a batch.

        A domain error of the effect rolls back to the savepoint (the item changed nothing) and
        propagates; the caller's other work stays. The key commits with the caller's transaction.
        """
        request_id: str = request.request_id  # type: ignore[attr-defined]
        validate_request_id(request_id)
        fingerprint = request_fingerprint(request)
        stored = self._stored(uow, scope, request_id)
        if stored is not None:
            return self._replay(stored, fingerprint, response_type, request_id)
        savepoint = uow.session.begin_nested()
        try:
            self._claim(uow, scope, request_id, fingerprint, None)
        except IntegrityError:
            savepoint.rollback()  # a concurrent first attempt committed meanwhile; answer with its result
            stored = self._stored(uow, scope, request_id)
            if stored is None:
                raise Internal("IDEMPOTENCY_RACE", f"request {request_id} kept racing with itself") from None
            return self._replay(stored, fingerprint, response_type, request_id)
        try:
            response = effect(uow)
            self._store(uow, scope, request_id, response)
            savepoint.commit()
        except BaseException:
            if savepoint.is_active:
                savepoint.rollback()
            raise
        return response

    def run_job(self, scope: str, request: Message, response_type: type[R], work: Callable[[], R]) -> R:
        """A job that commits in batches of its own: a replay returns the finished run's answer.

        The work must be idempotent by itself (re-running finds nothing left to do), because a run
        that crashed half-way stored no key and will be run again in full.
        """
        first = self.replay(scope, request, response_type)
        if first is not None:
            return first
        request_id: str = request.request_id  # type: ignore[attr-defined]
        fingerprint = request_fingerprint(request)
        response = work()
        with self._db.unit_of_work() as uow:
            try:
                self._claim(uow, scope, request_id, fingerprint, response)
                uow.commit()
            except IntegrityError:
                uow.session.rollback()
                stored = self._stored(uow, scope, request_id)
                if stored is not None:  # a concurrent run with the same id finished first
                    return self._replay(stored, fingerprint, response_type, request_id)
                raise
        return response

    # -- many keys at once: the set-based path of a batch ------------------------------------------

    def stored_many(self, uow: UnitOfWork, scope: str, request_ids: Sequence[str]) -> dict[str, Stored]:
        """The stored (fingerprint, answer) of those of `request_ids` that were used before."""
        if not request_ids:
            return {}
        t = self._table.c
        rows = uow.session.execute(
            select(t.request_id, t.request_hash, t.response).where(
                t.scope == scope, bulk.any_of(uow.session, t.request_id, list(request_ids))
            )
        ).all()
        return {row[0]: (row[1], row[2]) for row in rows}

    def claim_many(self, uow: UnitOfWork, scope: str, keys: Sequence[tuple[str, str, bytes]]) -> set[str]:
        """Store (request id, fingerprint, answer) keys in one statement, in the caller's
        transaction; returns the ids claimed. An id another transaction holds is left out (it
        waits for that transaction, as `run` does): the caller answers it from `stored_many`.
        Each answer is given in its deterministic wire form (`SerializeToString(deterministic=True)`)."""
        if not keys:
            return set()
        now = self._clock.now()
        ordered = sorted(keys, key=lambda key: key[0])
        if self._db.dialect == "postgresql":
            # One statement with an array per column: no SQL text that grows with the batch.
            claimed = bulk.plain_rows(
                uow.session,
                text(
                    f"INSERT INTO {self._table.name} (scope, request_id, request_hash, response, created_at)"
                    " SELECT :scope, unnest(CAST(:ids AS text[])), unnest(CAST(:hashes AS text[])),"
                    " unnest(CAST(:responses AS bytea[])), :now"
                    " ON CONFLICT (scope, request_id) DO NOTHING RETURNING request_id"
                ).bindparams(bindparam("now", type_=self._table.c.created_at.type)),
                {
                    "scope": scope,
                    "ids": bulk.array(key[0] for key in ordered),
                    "hashes": bulk.array(key[1] for key in ordered),
                    "responses": bulk.array(key[2] for key in ordered),
                    "now": now,
                },
            )
            return {row[0] for row in claimed}
        rows = [
            {
                "scope": scope,
                "request_id": request_id,
                "request_hash": fingerprint,
                "response": response,
                "created_at": now,
            }
            for request_id, fingerprint, response in ordered
        ]
        return set(uow.session.execute(self._insert_new, rows).scalars())

    @staticmethod
    def answer(stored: Stored, request: Message, response_type: type[R]) -> R:
        """The stored answer to `request` (IDEMPOTENCY_KEY_REUSED if it is another request)."""
        request_id: str = request.request_id  # type: ignore[attr-defined]
        return Idempotency._replay(stored, request_fingerprint(request), response_type, request_id)

    def _claim(self, uow: UnitOfWork, scope: str, request_id: str, fingerprint: str, response: Message | None) -> None:
        """Insert the key (IntegrityError if it exists), with the answer when it is already known."""
        uow.session.execute(
            insert(self._table).values(
                scope=scope,
                request_id=request_id,
                request_hash=fingerprint,
                response=None if response is None else response.SerializeToString(deterministic=True),
                created_at=self._clock.now(),
            )
        )
        uow.flush()

    def _insert_key(self, uow: UnitOfWork, scope: str, request_id: str, fingerprint: str, response: Message) -> bool:
        """Insert the key with its answer unless the key exists, in one statement: True when
        this call inserted it. On PostgreSQL an insert that meets a concurrent uncommitted key
        waits for that transaction: it then inserts (the other rolled back) or does nothing (it
        committed)."""
        inserted = uow.session.execute(
            self._insert_answer,
            {
                "key_scope": scope,
                "key_request_id": request_id,
                "key_hash": fingerprint,
                "key_response": response.SerializeToString(deterministic=True),
                "key_now": self._clock.now(),
            },
        ).first()
        return inserted is not None

    def _store(self, uow: UnitOfWork, scope: str, request_id: str, response: Message) -> None:
        """Keep the answer with the key claimed before the effect (`run_nested`)."""
        uow.session.execute(
            self._store_answer,
            {
                "key_scope": scope,
                "key_request_id": request_id,
                "key_response": response.SerializeToString(deterministic=True),
            },
        )

    def _stored_alone(self, scope: str, request_id: str) -> Stored | None:
        """`_stored` in a read of its own (outside any transaction of the caller's)."""
        with self._db.read() as session:
            return self._stored_in(session, scope, request_id)

    def _stored(self, uow: UnitOfWork, scope: str, request_id: str) -> Stored | None:
        return self._stored_in(uow.session, scope, request_id)

    def _stored_in(self, session: Session, scope: str, request_id: str) -> Stored | None:
        row = session.execute(self._select_stored, {"key_scope": scope, "key_request_id": request_id}).first()
        return None if row is None else (row[0], row[1])

    @staticmethod
    def _replay(stored: tuple[str, bytes | None], fingerprint: str, response_type: type[R], request_id: str) -> R:
        stored_hash, payload = stored
        if stored_hash != fingerprint:
            raise AlreadyExists(
                "IDEMPOTENCY_KEY_REUSED",
                f"request_id {request_id!r} was already used for a different request",
                metadata={"request_id": request_id},
            )
        if payload is None:  # cannot happen: key and answer commit together
            raise Internal("IDEMPOTENCY_RECORD_INCOMPLETE", f"request {request_id} has no stored answer")
        return response_type.FromString(payload)
