"""``@trace``: every call of a traced function becomes a span, and a request a trace tree.

    import tuneloop

    tuneloop.configure_tracing(logger=tuneloop.UsageLogger(db_path="usage.db"))

    @tuneloop.trace(name="retrieve", kind="retrieval")
    def retrieve(question: str) -> list[str]: ...

    @tuneloop.trace                       # sync or async functions, sync or async generators
    async def answer(question: str) -> str:
        docs = retrieve(question)         # a child span of "answer"
        with tuneloop.trace("rerank") as span:
            span.set_output(docs[:3])     # a context manager gives the span itself
        return ...

    await answer("How do refunds work?")
    tuneloop.last_interaction_id()        # the "answer" span's id: feedback goes there

A span records its input (the bound arguments), output, latency, error (type and message;
the exception is re-raised unchanged) and its parent; nesting follows ``contextvars``, so
it holds across ``await`` and into tasks started inside a span. Every span is one row of
``interactions``: ``kind`` "span" (or "chat" for ``kind="chat"`` spans, which then count
as chat interactions: datasets, feedback rates), ``trace_id`` the root span's id,
``parent_id`` the enclosing span's id, ``meta["span"]`` the name, kind, input and (when not
a string) output; ``query``/``response`` hold the text of a lone string argument and of a
string result (a chat span's are always text). A finished span is handed to the
:class:`~tuneloop.capture.UsageLogger`'s queue and its row built by the writer thread: a
traced call does no I/O, and nothing that goes wrong in tracing or logging ever raises
into the traced function's caller. Read a tree back with :func:`tuneloop.capture.trace_tree`.

Where spans go: the ``logger=`` of the span, else its parent's, else the one given to
:func:`configure_tracing`, else a default logger opened on a background thread at first
use (``$TUNELOOP_ENDPOINT`` in remote mode, else the default database, with
``on_full="drop"``); spans finished before it is open wait in memory (10,000 at most).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from tuneloop.capture.spans import (
    DISABLE_ENV,
    ENDPOINT_ENV,
    Span,
    TraceConfig,
    _current,
    _last,
    _restore,
    _state,
    start_span,
)
from tuneloop.errors import ConfigError

__all__ = ["trace", "Span", "TraceConfig", "configure_tracing", "current_span", "last_interaction_id",
           "ENDPOINT_ENV", "DISABLE_ENV"]


def configure_tracing(logger: Any = None, *, tracer_provider: Any = None, **options: Any) -> TraceConfig:
    """Set where spans go (``logger``) and how they are captured (:class:`TraceConfig` fields).

    Options not given keep their value. ``otel=True`` exports spans to OpenTelemetry too
    (``tracer_provider``, else the global one); it needs ``pip install tuneloop[otel]``.

    >>> cfg = configure_tracing(max_chars=2000)
    >>> cfg.max_chars, configure_tracing(max_chars=4000).max_chars
    (2000, 4000)
    """
    unknown = sorted(set(options) - {f.name for f in fields(TraceConfig)})
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a tracing option (choose from "
                          f"{', '.join(f.name for f in fields(TraceConfig))})")
    config = replace(_state.config, **options)
    if config.otel and (_state.otel is None or tracer_provider is not None):
        from tuneloop.capture.tracing_otel import OtelBridge

        _state.otel = OtelBridge(tracer_provider)
    elif not config.otel:
        _state.otel = None
    if logger is not None:
        with _state._lock:
            pending, _state.logger = list(_state._pending), logger
            _state._pending.clear()
        for row in pending:
            _state.deliver(logger, row)
    _state.config = config
    return config


def current_span() -> "Span | None":
    """The span this code runs in (None outside any traced call)."""
    return _current.get()


def last_interaction_id() -> str | None:
    """The id of the span (or wrapped OpenAI call) that last finished in this context.

    Right after ``answer(question)`` returns, it is ``answer``'s span: the interaction to
    send feedback to. (Spans finished inside tasks the caller did not await directly, or
    in other threads, are not seen here.)
    """
    return _last.get()


class _NoopSpan:
    """What ``with trace(...)`` gives when tracing is off: the setters do nothing."""

    id = interaction_id = trace_id = parent_id = None

    def set_input(self, value: Any) -> None: ...

    def set_output(self, value: Any) -> None: ...

    def set_metadata(self, **items: Any) -> None: ...

    def update(self, **columns: Any) -> None: ...

    def record_feedback(self, *args: Any, **kw: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "Span(off)"


NOOP_SPAN = _NoopSpan()


# ---------------------------------------------------------------- trace(): decorator and context manager
_SKIP_FIRST = ("self", "cls")


class _Binder:
    """Bound arguments as a dict, fast: parameter names are read once, at decoration."""

    __slots__ = ("names", "varargs", "skip")

    def __init__(self, func: Callable[..., Any]) -> None:
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.names = tuple(p.name for p in params if p.kind in positional)
        self.varargs = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), "args")
        self.skip = self.names[0] if self.names and self.names[0] in _SKIP_FIRST else None

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self.names
        bound = dict(zip(names, args))
        if len(args) > len(names):
            bound[self.varargs] = args[len(names):]
        if kwargs:
            bound.update(kwargs)
        if self.skip is not None:
            bound.pop(self.skip, None)
        return bound


class _Trace:
    """What ``trace(...)`` returns: a decorator, and a (sync or async) context manager."""

    def __init__(self, name: str | None, kind: str, logger: Any, metadata: dict[str, Any] | None,
                 user_id: str | None, session_id: str | None, capture_input: bool | None,
                 capture_output: bool | None, input: Any) -> None:
        if not isinstance(kind, str) or not kind or len(kind) > 32:
            raise ConfigError(f"kind: must be a short name (span, chain, llm, chat, retrieval, tool, ...), "
                              f"got {kind!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name: must be a string, got {type(name).__name__}")
        self.name, self.kind, self.logger, self.metadata = name, kind, logger, metadata
        self.user_id, self.session_id, self.input = user_id, session_id, input
        self.capture_input, self.capture_output = capture_input, capture_output
        self._entered: list[tuple[Span | None, Any]] = []

    # -- the span of one call
    def begin(self, name: str, binder: _Binder | None, args: tuple, kwargs: dict[str, Any],
              activate: bool) -> Span | None:
        span = start_span(name, self.kind, logger=self.logger, activate=activate, user_id=self.user_id,
                          session_id=self.session_id, metadata=self.metadata)
        if span is None:
            return None
        try:
            capture = span.config.capture_input if self.capture_input is None else self.capture_input
            if self.capture_output is not None:
                span.capture_output = self.capture_output
            if capture:
                if binder is not None:
                    span.input = span._snapshot(binder.bind(args, kwargs))
                elif self.input is not None:
                    span.input = span._snapshot(self.input)
        except Exception as exc:
            _state.warn("tuneloop trace: cannot record the input of %r: %s", name, exc)
        return span

    # -- context manager
    def __enter__(self) -> "Span | _NoopSpan":
        span = self.begin(self.name or "span", None, (), {}, activate=True)
        token = _current.set(span) if span is not None else None
        self._entered.append((span, token))
        return span if span is not None else NOOP_SPAN

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span, token = self._pop()
        if token is not None:
            _restore(token)
        if span is not None:
            span.end(exc)

    def _pop(self) -> tuple[Span | None, Any]:
        # One trace("step") object may be entered by several tasks at once: leave the
        # span this context entered, not merely the last one entered.
        entered, current = self._entered, _current.get()
        for i in range(len(entered) - 1, -1, -1):
            if entered[i][0] is current:
                return entered.pop(i)
        return entered.pop() if entered else (None, None)

    async def __aenter__(self) -> "Span | _NoopSpan":
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator
    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(func, (staticmethod, classmethod)):
            return type(func)(self(func.__func__))
        if not callable(func):
            raise ConfigError(f"trace: can decorate a function, not a {type(func).__name__}")
        from tuneloop.capture import tracing_wrappers

        return tracing_wrappers.wrap(self, func, self.name or getattr(func, "__qualname__", None) or repr(func),
                                   _Binder(func))


def trace(func: Callable[..., Any] | str | None = None, /, *, name: str | None = None, kind: str = "span",
          logger: Any = None, metadata: dict[str, Any] | None = None, user_id: str | None = None,
          session_id: str | None = None, capture_input: bool | None = None, capture_output: bool | None = None,
          input: Any = None) -> Any:
    """Trace a function (``@trace``, ``@trace(name=..., kind=...)``) or a block (``with trace("step")``).

    Args:
        name: the span's name (default: the function's qualified name).
        kind: what the span is: ``span`` (default), ``chain``, ``llm``, ``retrieval``, ``tool``,
            ... — ``chat`` makes the row a chat interaction (input ``messages`` or one string
            argument as the query, the returned text as the response).
        logger: the :class:`UsageLogger` for this span and the spans inside it.
        metadata: stored in the row's ``meta``; ``user_id``/``session_id`` also pass to children.
        capture_input / capture_output: override :class:`TraceConfig` for this function.
        input: a context manager's input (a decorated function records its arguments).

    >>> @trace(kind="tool")
    ... def add(a, b):
    ...     return a + b
    >>> add(2, 3)                                       # doctest: +SKIP
    5
    >>> with trace("step", input={"n": 1}) as span:     # doctest: +SKIP
    ...     span.set_output("done")
    """
    if isinstance(func, str):
        if name is not None:
            raise ConfigError("trace: give the name once (trace('step') or trace(name='step'))")
        name, func = func, None
    t = _Trace(name, kind, logger, metadata, user_id, session_id, capture_input, capture_output, input)
    return t if func is None else t(func)
