"""Dependencies shared by the routes: the backends, the Idempotency-Key, pagination."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from gateway.auth import Principal
from gateway.backends import Backends
from gateway.convert import text_fault
from shared.errors import InvalidArgument

MAX_KEY_LENGTH = 63  # `<sub>/<key>` stays within the services' 128-character request ids


def _backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


Api = Annotated[Backends, Depends(_backends)]

_KEY_DESCRIPTION = (
    "Client-chosen key, 1 to 63 printable ASCII characters, the same on every retry of one operation. "
    "Scoped to the token's subject and passed on to the service as the request id."
)
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[!-~]+$",
        description=_KEY_DESCRIPTION,
    ),
]
OptionalIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[!-~]+$",
        description=_KEY_DESCRIPTION + " Optional here: without one, a retry may repeat the change.",
    ),
]
PageSize = Annotated[int, Query(ge=0, le=1000, description="0 means the service default (50).")]
PageToken = Annotated[str, Query(max_length=1024, description="next_page_token of the previous page.")]


def request_id(principal: Principal, key: str | None) -> str:
    """The service request id of a client's key: namespaced by the caller, so two customers who
    happen to choose the same key never collide (or learn of each other)."""
    return f"{principal.sub}/{key if key is not None else uuid.uuid4().hex}"


def storable_parameters(request: Request) -> None:
    """Path and query parameters must be text a service can store (see `text_fault`); bodies are
    checked by their models."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        fault = text_fault(value) if isinstance(value, str) else None
        if fault:
            raise InvalidArgument.field(name, fault)
