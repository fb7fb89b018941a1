"""Probes: liveness of the process and readiness of every backend."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.deps import Api
from shared.errors import PeerUnavailable

router = APIRouter(tags=["probes"])


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    backends: dict[str, str]


@router.get("/healthz", response_model=Liveness, summary="The gateway process is up")
def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Every backend answers SERVING (else 503)")
def readyz(api: Api) -> Readiness:
    backends = api.health()
    down = sorted(name for name, state in backends.items() if state != "SERVING")
    if down:
        raise PeerUnavailable("BACKEND_NOT_SERVING", f"not serving: {', '.join(down)}", metadata=backends)
    return Readiness(status="ready", backends=backends)
