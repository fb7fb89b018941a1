"""The standard OTEL_* variables: service name and version on the resource, the sampler, the
exporters; a bad value fails start-up naming the variable. Span attributes come only from the
listed request fields."""

from __future__ import annotations

import pytest
from loyalty.common.v1 import money_pb2
from loyalty.points.v1 import points_pb2
from loyalty.wallet.v1 import wallet_pb2
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.settings import SettingsError
from shared.telemetry import VERSION, Telemetry, metrics_port_from_env, request_attributes


def spans_of(environ: dict[str, str], count: int = 20) -> list[str]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry("points", environ=environ, processors=(SimpleSpanProcessor(exporter),))
    for index in range(count):
        with telemetry.tracer.start_as_current_span(f"work-{index}"):
            pass
    return [span.name for span in exporter.get_finished_spans()]


def test_the_resource_names_the_service_and_its_version() -> None:
    resource = Telemetry("points", environ={}).provider.resource.attributes
    assert (resource["service.name"], resource["service.version"]) == ("points", VERSION)
    renamed = Telemetry("points", environ={"OTEL_SERVICE_NAME": "points-canary"}).provider.resource.attributes
    assert renamed["service.name"] == "points-canary"
    assert "k8s.pod.name" not in resource
    in_a_pod = Telemetry("points", environ={"POD_NAME": "points-7d9f-x2", "POD_NAMESPACE": "loyalty"})
    for attributes in (in_a_pod.provider.resource.attributes, in_a_pod.meter_provider._sdk_config.resource.attributes):
        assert (attributes["k8s.pod.name"], attributes["k8s.namespace.name"]) == ("points-7d9f-x2", "loyalty")


def test_the_sampler_follows_otel_traces_sampler() -> None:
    assert len(spans_of({})) == 20  # parentbased_always_on
    assert spans_of({"OTEL_TRACES_SAMPLER": "always_off"}) == []
    assert spans_of({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}) == []
    assert len(spans_of({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"})) == 20


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER must be one of"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER must be otlp, console or none"),
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER must be"),
        ({"METRICS_PORT": "http"}, "METRICS_PORT must be an integer"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT must be between 0 and 65535"),
    ],
)
def test_bad_values_fail_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Telemetry("points", environ=environ)


def test_exporters_are_built_from_the_variables() -> None:
    otlp = Telemetry(
        "points",
        environ={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.invalid:4317",
        },
    )
    otlp.shutdown()  # nothing was recorded; shutting down sends nothing
    assert metrics_port_from_env({}) == 0 and metrics_port_from_env({"METRICS_PORT": "0"}) == 0
    assert metrics_port_from_env({"METRICS_PORT": "9464"}) == 9464


def test_span_attributes_are_ids_and_quantities_only() -> None:
    top_up = wallet_pb2.TopUpRequest(
        request_id="r-1",
        customer_id="c-1",
        amount=money_pb2.Money(amount_minor=150_050, currency_code="RUB"),
        card_token="tok_secret_value",
    )
    assert request_attributes(top_up) == {
        "loyalty.request_id": "r-1",
        "loyalty.customer_id": "c-1",
        "loyalty.amount.amount_minor": 150_050,
        "loyalty.amount.currency_code": "RUB",
    }
    credit = points_pb2.CreditPointsRequest(
        customer_id="c-2", points=40, source=points_pb2.POINTS_SOURCE_CAMPAIGN, reason="birthday of Ivan Petrov"
    )
    assert request_attributes(credit) == {
        "loyalty.customer_id": "c-2",
        "loyalty.points": 40,
        "loyalty.source": "POINTS_SOURCE_CAMPAIGN",
    }
    assert request_attributes(b"raw bytes") == {}
