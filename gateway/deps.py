"""Dependencies shared by the routes: the backends, the Idempotency-Key, pagination."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

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


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_DECLARED: dict[int, frozenset[str]] = {}  # by id() of a route: routes live as long as their app


def _declared_query(route: APIRoute) -> frozenset[str]:
    names = _DECLARED.get(id(route))
    if names is None:
        names = _DECLARED[id(route)] = frozenset(_query_names(route.dependant))
    return names


def storable_parameters(request: Request) -> None:
    """Query parameters must be ones the route declares (an unknown one is 400
    `UNKNOWN_QUERY_PARAMETER`: a misspelt `page_sise`, or a `customer_id` that would otherwise be
    silently ignored, is the client's mistake to hear about); path and query parameters must be
    text a service can store (see `text_fault`); bodies are checked by their models."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        declared = _declared_query(route)
        for name in request.query_params:
            if name not in declared:
                raise InvalidArgument.field(name, "is not a parameter of this operation", "UNKNOWN_QUERY_PARAMETER")
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        fault = text_fault(value) if isinstance(value, str) else None
        if fault:
            raise InvalidArgument.field(name, fault)
