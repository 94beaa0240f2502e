"""OpenTelemetry: one tracer provider per process, and trace context carried across process boundaries.

Context travels as W3C `traceparent`/`tracestate` in NATS message headers and in gRPC metadata, so a run's
spans from api, launcher and logs join into one trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ame_platform.settings import TelemetrySettings


class Telemetry:
    """The process's tracer provider; `memory` keeps finished spans for tests."""

    def __init__(self, settings: TelemetrySettings, service_name: str) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
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

    def shutdown(self) -> None:
        self.provider.shutdown()


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
