"""Export tuneloop spans to OpenTelemetry too, with the GenAI semantic conventions.

Turned on by ``tuneloop.configure_tracing(otel=True)`` (``pip install tuneloop[otel]``):
each span also becomes an OpenTelemetry span of the global (or the given) tracer
provider, so an existing tracing backend (Jaeger, Tempo, Honeycomb, Datadog, ...) receives
them. Parents follow tuneloop's nesting, and a root span joins whatever OpenTelemetry span
is current (a web framework's request span, say). While a traced function or block runs,
its OpenTelemetry span is the current one, so other instrumentation (httpx, databases)
nests under it.

Attributes (https://opentelemetry.io/docs/specs/semconv/gen-ai/):

- every span: ``tuneloop.interaction_id``, ``tuneloop.trace_id``, ``tuneloop.span.kind``,
  ``user.id``, ``session.id``; on failure status ERROR, ``error.type`` and the exception event
- ``gen_ai.operation.name``: ``chat`` (kinds chat, llm), ``retrieval``, ``execute_tool``
  (tool, with ``gen_ai.tool.name``), ``embeddings``, ``invoke_agent``
- chat spans: ``gen_ai.provider.name`` and ``gen_ai.system``, ``gen_ai.request.model``,
  ``gen_ai.request.temperature`` / ``top_p`` / ``max_tokens`` / ``frequency_penalty`` /
  ``presence_penalty`` / ``seed`` / ``stop_sequences`` / ``choice.count``,
  ``gen_ai.response.id`` / ``model`` / ``finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens``, ``gen_ai.conversation.id`` (the session)
- contents (prompts, answers, inputs, outputs) only with ``otel_capture_content=True``:
  ``gen_ai.input.messages`` / ``gen_ai.output.messages`` on chat spans, ``tuneloop.input`` /
  ``tuneloop.output`` (JSON) on the others.
"""
from __future__ import annotations

import time
from typing import Any

from tuneloop.errors import ConfigError

_OPERATIONS = {"chat": "chat", "llm": "chat", "retrieval": "retrieval", "tool": "execute_tool",
               "embedding": "embeddings", "embeddings": "embeddings", "agent": "invoke_agent"}
_REQUEST_PARAMS = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
                   "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
                   "frequency_penalty": "gen_ai.request.frequency_penalty",
                   "presence_penalty": "gen_ai.request.presence_penalty", "seed": "gen_ai.request.seed",
                   "n": "gen_ai.request.choice.count"}


def _attr(value: Any) -> Any:
    """An attribute value OpenTelemetry takes: str, bool, int, float or a list of one of them."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    from tuneloop.capture.records import encode_json

    return encode_json(value)


class OtelBridge:
    """Starts and ends one OpenTelemetry span per tuneloop span."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import context, trace
        except ImportError as exc:
            raise ConfigError("otel: OpenTelemetry is not installed; pip install 'tuneloop[otel]' "
                              "(opentelemetry-api and opentelemetry-sdk)") from exc
        import tuneloop

        self._context, self._trace = context, trace
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer("tuneloop", getattr(tuneloop, "__version__", None))

    def start(self, span: Any, parent: Any, activate: bool) -> None:
        trace = self._trace
        ctx = trace.set_span_in_context(parent._otel) if parent is not None and parent._otel is not None else None
        kind = trace.SpanKind.CLIENT if span.kind in ("chat", "llm") else trace.SpanKind.INTERNAL
        otel_span = self.tracer.start_span(span.name, context=ctx, kind=kind, start_time=time.time_ns(),
                                           attributes={"tuneloop.interaction_id": span.id,
                                                       "tuneloop.trace_id": span.trace_id,
                                                       "tuneloop.span.kind": span.kind})
        span._otel = otel_span
        if activate:
            span._otel_token = self._context.attach(trace.set_span_in_context(otel_span))

    def end(self, span: Any, exc: BaseException | None) -> None:
        otel_span, span._otel = span._otel, None
        try:
            otel_span.set_attributes({k: v for k, v in self._attributes(span).items() if v is not None})
            if span.kind in ("chat", "llm") and span.model:
                otel_span.update_name(f"chat {span.model}")
            if exc is not None:
                otel_span.set_attribute("error.type", type(exc).__qualname__)
                otel_span.record_exception(exc)
                otel_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, span.error))
            otel_span.end()
        finally:
            token, span._otel_token = span._otel_token, None
            if token is not None:
                try:
                    self._context.detach(token)
                except Exception:  # detached in another context: OpenTelemetry only logs it
                    pass

    @staticmethod
    def _attributes(span: Any) -> dict[str, Any]:
        meta = span.metadata or {}
        attrs: dict[str, Any] = {"user.id": span.user_id, "session.id": span.session_id}
        op = _OPERATIONS.get(span.kind)
        if op is not None:
            attrs["gen_ai.operation.name"] = op
        if span.kind == "tool":
            attrs["gen_ai.tool.name"] = span.name
        if op == "chat":
            provider = meta.get("provider")
            attrs.update({"gen_ai.provider.name": provider, "gen_ai.system": provider,
                          "gen_ai.request.model": span.model, "gen_ai.conversation.id": span.session_id,
                          "gen_ai.usage.input_tokens": span.prompt_tokens,
                          "gen_ai.usage.output_tokens": span.completion_tokens,
                          "gen_ai.response.id": meta.get("response_id"),
                          "gen_ai.response.model": meta.get("response_model"),
                          "gen_ai.request.stream": meta.get("stream")})
            reasons = meta.get("finish_reasons")
            if reasons:
                attrs["gen_ai.response.finish_reasons"] = [str(r) for r in reasons]
            params = meta.get("params") or {}
            for key, name in _REQUEST_PARAMS.items():
                if isinstance(params.get(key), (int, float)) and not isinstance(params.get(key), bool):
                    attrs[name] = params[key]
            stop = params.get("stop")
            if stop:
                attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        if span.config.otel_capture_content:
            attrs.update(_content(span, op == "chat"))
        return {k: _attr(v) for k, v in attrs.items()}


def _content(span: Any, chat: bool) -> dict[str, Any]:
    from tuneloop.capture.spans import _UNSET

    out: dict[str, Any] = {}
    if chat:
        if span.messages is not None:
            out["gen_ai.input.messages"] = span.messages
        if span.output is not _UNSET:
            out["gen_ai.output.messages"] = [{"role": "assistant", "content": span.output}]
    else:
        if span.input is not _UNSET:
            out["tuneloop.input"] = span.input
        if span.output is not _UNSET:
            out["tuneloop.output"] = span.output
    return out
