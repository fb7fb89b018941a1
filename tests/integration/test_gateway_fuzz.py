"""Property-based HTTP fuzzing of the gateway (schemathesis over its own /openapi.json), through a
real uvicorn server against the four real services: no answer is a 5xx, and every answer has a
documented status, content type and body shape.

Schemathesis sends both valid and invalid requests (wrong types, out-of-range and huge numbers,
missing fields, bad path and query parameters). The token carries both roles, so the calls reach
the services instead of stopping at 403.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import close, create_app
from shared.clock import ManualClock
from tests.harness import Databases, Harness, free_port
from tests.integration.gateway_support import gateway_settings, token

# Schemathesis's own strategies trip this Hypothesis deprecation; nothing in this project does.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

schema = schemathesis.openapi.from_dict(create_app(gateway_settings({})).openapi())

# Modest in the suite; `GATEWAY_FUZZ_EXAMPLES=200 pytest tests/integration/test_gateway_fuzz.py` digs deeper.
MAX_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    databases = Databases(Path(tmp_path_factory.mktemp("fuzz")))
    harness = Harness(databases, ManualClock())
    app = None
    server = None
    thread = None
    try:
        services = harness.start_all()
        app = create_app(gateway_settings({name: svc.target for name, svc in services.items()}))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, name="fuzz-gateway", daemon=True)
        thread.start()
        end = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < end and thread.is_alive(), "the gateway did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
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
]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_answer_as_documented(case: schemathesis.Case[Any], live_gateway: str) -> None:
    case.call_and_validate(base_url=live_gateway, headers=HEADERS, checks=CHECKS)
