"""OpenTelemetry: one tracer and one meter provider per process, and trace context across process boundaries.

Context travels as W3C `traceparent`/`tracestate` in NATS message headers and in gRPC metadata, so a run's
spans from api, launcher and logs join into one trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ame_platform.settings import TelemetrySettings


class Telemetry:
    """The process's tracer and meter providers; `memory` keeps finished spans and metrics for tests."""

    def __init__(self, settings: TelemetrySettings, service_name: str) -> None:
        resource = Resource.create({"service.name": service_name})
        self.provider = TracerProvider(resource=resource)
        self.metrics_memory: InMemoryMetricReader | None = None
        readers: list[MetricReader] = []
        if settings.exporter == "memory":
            self.metrics_memory = InMemoryMetricReader()
            readers.append(self.metrics_memory)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.memory: InMemorySpanExporter | None = None
        exporter: SpanExporter | None = None
        if settings.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        elif settings.exporter == "memory":
            self.memory = InMemorySpanExporter()
            exporter = self.memory
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.meter_provider.shutdown()


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into headers or metadata; returns the carrier."""
    propagate.inject(carrier)
    return carrier


@contextmanager
def extracted(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context found in headers or metadata current for the duration of the block."""
    token = otel_context.attach(propagate.extract(dict(carrier or {})))
    try:
        yield
    finally:
        otel_context.detach(token)
