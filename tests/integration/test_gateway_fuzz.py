"""Property-based HTTP fuzzing of the gateway (schemathesis over its own /openapi.json), through a
real uvicorn server against the four real services: no answer is a 5xx, every answer has a
documented status, content type and body shape, a request that breaks the schema (negative data:
wrong types, unknown query parameters, ...) is refused with a 4xx, and a refusal changes nothing
in the four databases (the fingerprint of `tests.fuzz_support`; for a card decline or a
compensated order, nothing in the balances).

Schemathesis sends both valid and invalid requests (wrong types, out-of-range and huge numbers,
missing fields, bad path and query parameters). The token carries both roles, so the calls reach
the services instead of stopping at 403.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import close, create_app
from shared.clock import ManualClock
from shared.db import create_db_engine
from tests.fuzz_support import EXTERNAL, Fingerprint, refusal_changes
from tests.harness import START_ORDER, Databases, Harness, free_port
from tests.integration.gateway_support import gateway_settings, token

# Schemathesis's own strategies trip this Hypothesis deprecation; nothing in this project does.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

schema = schemathesis.openapi.from_dict(create_app(gateway_settings({})).openapi())

# Modest in the suite; `GATEWAY_FUZZ_EXAMPLES=200 pytest tests/integration/test_gateway_fuzz.py` digs deeper.
MAX_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "12"))


@dataclass
class Live:
    url: str
    fingerprints: dict[str, Fingerprint]
    # The state after the last refusal: the state before the next request, as nothing else writes.
    last: dict[str, dict[str, str]] | None = None
    backend_calls: int = 0  # calls the gateway made to the services, so far

    def state(self) -> dict[str, dict[str, str]]:
        return {name: fingerprint.take() for name, fingerprint in self.fingerprints.items()}


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    databases = Databases(Path(tmp_path_factory.mktemp("fuzz")))
    harness = Harness(databases, ManualClock())
    app = None
    server = None
    thread = None
    engines = []
    try:
        # No background relays: a refusal's "before" and "after" are not moved by a delivery.
        services = {name: harness.start(name, background_relay=False) for name in START_ORDER}
        fingerprints = {}
        for name, service in services.items():
            engines.append(create_db_engine(service.database_url, pool_size=1))
            fingerprints[name] = Fingerprint(engines[-1], exclude=EXTERNAL)
        app = create_app(gateway_settings({name: svc.target for name, svc in services.items()}))
        live = Live("", fingerprints)
        backends = app.state.backends
        call = backends.call

        def counted(*args: Any, **kwargs: Any) -> Any:
            live.backend_calls += 1
            return call(*args, **kwargs)

        backends.call = counted  # the one way the gateway reaches a service (jobs included)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, name="fuzz-gateway", daemon=True)
        thread.start()
        end = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < end and thread.is_alive(), "the gateway did not start"
            time.sleep(0.02)
        live.url = f"http://127.0.0.1:{port}"
        yield live
    finally:
        for engine in engines:
            engine.dispose()
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=10)
        if app is not None:
            close(app)
        harness.close()
        databases.drop_all()


HEADERS = {"Authorization": f"Bearer {token('fuzz-customer', 'customer', 'operator', ttl_seconds=3600)}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_answer_as_documented(case: schemathesis.Case[Any], live_gateway: Live) -> None:
    before = live_gateway.last or live_gateway.state()
    live_gateway.last, calls = None, live_gateway.backend_calls
    response = case.call(base_url=live_gateway.url, headers=HEADERS)
    case.validate_response(response, checks=CHECKS, headers=HEADERS)
    if live_gateway.backend_calls == calls:
        live_gateway.last = before  # refused by the gateway itself, which holds no state
    elif 400 <= response.status_code < 500 and response.status_code != 429:
        problem = response.json()
        # A declined card keeps its released hold, a compensated order its FAILED record.
        deliberate = problem.get("reason") == "CARD_DECLINED" or "order_id" in problem.get("metadata", {})
        after = live_gateway.last = live_gateway.state()
        for name in before:
            moved = refusal_changes(name, before[name], after[name], deliberate=deliberate)
            assert not moved, f"{case.method} {case.path} refused {response.status_code} {problem} but changed {moved}"
