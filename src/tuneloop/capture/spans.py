"""Spans: what one traced call records, the process-wide tracing state, and how a finished
span reaches a :class:`~tuneloop.capture.UsageLogger`.

The public side is :mod:`tuneloop.capture.tracing` (``trace``, ``configure_tracing``) and
:mod:`tuneloop.capture.openai_wrap`; this module is what they share. The current span is a
``contextvars`` variable, so nesting holds across ``await`` and into tasks. A finished
span is queued as is (``UsageLogger.log_deferred``): its row is built by the logger's
writer thread, off the traced call's path.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from tuneloop.capture.jsonsafe import clip, jsonable
from tuneloop.capture.logger import UsageLogger, _RateLimitedWarning
from tuneloop.capture.records import INTERACTION_COLUMNS, check_messages, encode_json, last_user_message
from tuneloop.errors import ConfigError, ValidationError
from tuneloop.ids import new_id

__all__ = ["Span", "TraceConfig", "start_span", "ENDPOINT_ENV", "DISABLE_ENV"]

log = logging.getLogger("tuneloop.capture.trace")

ENDPOINT_ENV = "TUNELOOP_ENDPOINT"  #: a tuneloop server for the default logger (remote mode)
DISABLE_ENV = "TUNELOOP_TRACING"  #: "off" (or 0/false) turns tracing off: traced functions run bare

_current: contextvars.ContextVar["Span | None"] = contextvars.ContextVar("tuneloop_span", default=None)
_last: contextvars.ContextVar["str | None"] = contextvars.ContextVar("tuneloop_last_interaction", default=None)
_UNSET: Any = object()


@dataclass(frozen=True)
class TraceConfig:
    """How spans are captured. Set process-wide with :func:`configure_tracing`.

    >>> TraceConfig(max_chars=500).max_chars
    500
    """

    enabled: bool = field(default=True, metadata={"help": "Trace at all (False: traced functions run bare)."})
    capture_input: bool = field(default=True, metadata={"help": "Record span inputs (bound arguments)."})
    capture_output: bool = field(default=True, metadata={"help": "Record span outputs (return values, "
                                                                 "yielded items)."})
    max_chars: int = field(default=4000, metadata={"help": "Longest string kept in an input or output; "
                                                          "longer ones are cut, saying how much."})
    max_items: int = field(default=100, metadata={"help": "Most items kept of a list, dict or generator."})
    max_depth: int = field(default=8, metadata={"help": "Deepest nesting kept; deeper values become text."})
    otel: bool = field(default=False, metadata={"help": "Also export spans to OpenTelemetry (needs the "
                                                        "`otel` extra) with GenAI semantic conventions."})
    otel_capture_content: bool = field(default=False, metadata={
        "help": "Put inputs and outputs (prompts, answers) on the OpenTelemetry spans too."})

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_items", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: must be an integer >= 1, got {value!r}")
        for f in fields(self):
            if f.type in ("bool", bool) and not isinstance(getattr(self, f.name), bool):
                raise ConfigError(f"{f.name}: must be true or false, got {getattr(self, f.name)!r}")


class _State:
    """Process-wide tracing state: the config, the default logger and the OpenTelemetry bridge."""

    def __init__(self) -> None:
        self.config = TraceConfig(enabled=os.environ.get(DISABLE_ENV, "on").lower() not in ("off", "0", "false"))
        self.logger: Any = None  # set by configure_tracing, or opened in the background
        self.otel: Any = None
        self.failed = 0  # spans that could not be handed to a logger
        self._pending: deque[Span] = deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._opening = False
        self._retry_at = 0.0
        self._warn = _RateLimitedWarning(10.0)

    def warn(self, msg: str, *args: Any) -> None:
        """At most one warning of a kind (``msg``) every 10 s: a broken store must not flood the
        host's logs; the next one says how many were suppressed."""
        self._warn(msg, msg, *args)

    def deliver(self, logger: Any, span: "Span") -> None:
        """Queue a finished span on ``logger`` (or the default one); never raises."""
        try:
            if logger is None:
                logger = self.logger
                if logger is None:
                    return self._hold(span)
            _send(logger, span)
        except Exception as exc:
            self.count_failure("a span was not logged", exc)

    def count_failure(self, what: str, exc: BaseException) -> None:
        self.failed += 1
        self._warn(what, "tuneloop trace: %s (%s: %s); %d so far", what, type(exc).__name__, exc, self.failed)

    def _hold(self, span: "Span") -> None:
        with self._lock:
            if self.logger is not None:  # opened meanwhile
                _send(self.logger, span)
                return
            self._pending.append(span)
            if self._opening or time.monotonic() < self._retry_at:
                return
            self._opening = True
        threading.Thread(target=self._open_default, name="tuneloop-trace-open", daemon=True).start()

    def _open_default(self) -> None:
        try:
            endpoint = os.environ.get(ENDPOINT_ENV)
            logger = UsageLogger(endpoint=endpoint, on_full="drop") if endpoint else UsageLogger(on_full="drop")
        except Exception as exc:
            log.error("tuneloop trace: cannot open the default logger (%s); spans are kept in memory and it is "
                      "retried in 60 s. Call tuneloop.configure_tracing(logger=...) to choose one.", exc)
            with self._lock:
                self._opening, self._retry_at = False, time.monotonic() + 60.0
            return
        with self._lock:
            while self._pending:
                self.deliver(logger, self._pending.popleft())
            self.logger, self._opening = logger, False


def _send(logger: Any, span: "Span") -> None:
    """A finished span onto ``logger``: a :class:`UsageLogger` builds its row on the writer
    thread (``log_deferred``); any other logger gets ``log(**row)`` now."""
    if logger.__class__ is UsageLogger:
        logger.log_deferred(span)
        return
    row = span.row()
    if row is not None:
        fields = {k: v for k, v in row.items() if v is not None and k not in ("meta", "dedupe_hash", "token_count")}
        logger.log(metadata=row["meta"], **fields)


def _bad_field(row: dict[str, Any]) -> str | None:
    """The first column holding a value a user set that the store would refuse (None: all fine)."""
    for key in ("user_id", "session_id", "model"):
        v = row[key]
        if v is not None and (v.__class__ is not str or len(v) > 255):
            return key
    for key in ("prompt_tokens", "completion_tokens"):
        v = row[key]
        if v is not None and (v.__class__ is not int or v < 0):
            return key
    v = row["cost"]
    if v is not None and not (v.__class__ in (int, float) and 0 <= v < float("inf")):
        return "cost"
    return None


_state = _State()


class Span:
    """One traced call: ``interaction_id``, ``trace_id``, ``parent_id``, input, output, error.

    Got from ``with trace("step") as span`` or :func:`current_span`. Setters may be called
    while the span runs; what they set is written when it ends.
    """

    __slots__ = ("id", "trace_id", "parent_id", "name", "kind", "logger", "user_id", "session_id", "model",
                 "input", "output", "messages", "metadata", "status", "error", "ts", "latency_ms",
                 "prompt_tokens", "completion_tokens", "cost", "capture_output", "config", "ended",
                 "prepare", "_t0", "_otel", "_otel_token")

    def __init__(self, name: str, kind: str, logger: Any, parent: "Span | None", config: TraceConfig) -> None:
        self.id = new_id()
        self.name, self.kind, self.config = name, kind, config
        if parent is not None:
            self.parent_id, self.trace_id = parent.id, parent.trace_id
            self.logger = logger if logger is not None else parent.logger
            self.user_id, self.session_id = parent.user_id, parent.session_id
        else:
            self.parent_id, self.trace_id, self.logger = None, self.id, logger
            self.user_id = self.session_id = None
        self.model = self.messages = self.metadata = self.error = self.latency_ms = None
        self.prompt_tokens = self.completion_tokens = self.cost = self._otel = self._otel_token = None
        self.prepare: Callable[[], None] | None = None  # fills fields from raw data, on the writer thread
        self.input = self.output = _UNSET
        self.status, self.capture_output, self.ended = "ok", config.capture_output, False
        self.ts = time.time()
        self._t0 = time.perf_counter()

    @property
    def interaction_id(self) -> str:
        """This span's row id in ``interactions``: where feedback on it goes."""
        return self.id

    def set_input(self, value: Any) -> None:
        """Record ``value`` (a JSON-safe, size-bounded copy) as this span's input."""
        self.input = self._snapshot(value)

    def set_output(self, value: Any) -> None:
        """Record ``value`` as this span's output (a traced function's return value is not
        recorded over it)."""
        self.output = self._snapshot(value)

    def set_metadata(self, **items: Any) -> None:
        """Add ``items`` to this span's metadata (stored in the row's ``meta``)."""
        meta = self.metadata if self.metadata is not None else {}
        meta.update(jsonable(items, max_chars=self.config.max_chars, max_items=self.config.max_items))
        self.metadata = meta

    def update(self, *, user_id: str | None = None, session_id: str | None = None, model: str | None = None,
               prompt_tokens: int | None = None, completion_tokens: int | None = None,
               cost: float | None = None) -> None:
        """Set interaction columns of this span; ``user_id``/``session_id`` pass to spans started after."""
        for key, value in (("user_id", user_id), ("session_id", session_id), ("model", model),
                           ("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens),
                           ("cost", cost)):
            if value is not None:
                setattr(self, key, value)

    def record_feedback(self, feedback: float | None = None, **kw: Any) -> str | None:
        """Feedback on this span: :meth:`UsageLogger.record_feedback` with this span's id."""
        logger = self.logger if self.logger is not None else _state.logger
        if logger is None:
            _state.warn("tuneloop trace: no logger yet; feedback on %s not recorded", self.id)
            return None
        return logger.record_feedback(self.id, feedback, **kw)

    def _snapshot(self, value: Any) -> Any:
        c = self.config
        return jsonable(value, max_chars=c.max_chars, max_items=c.max_items, max_depth=c.max_depth)

    def end(self, exc: BaseException | None = None, result: Any = _UNSET) -> None:
        """Finish the span (once) and queue its row; never raises."""
        if self.ended:
            return
        self.ended = True
        try:
            self.latency_ms = (time.perf_counter() - self._t0) * 1000.0
            if exc is not None:
                self.status = "error"
                self.error = clip(f"{type(exc).__name__}: {exc}", self.config.max_chars)
            elif result is not _UNSET and self.output is _UNSET and self.capture_output:
                self.output = self._snapshot(result)
            if self._otel is not None and _state.otel is not None:
                self._prepare()  # OpenTelemetry needs the attributes now
                _state.otel.end(self, exc)
            _last.set(self.id)
            _state.deliver(self.logger, self)
        except Exception as err:  # a bug here must never reach the host
            _state.count_failure(f"cannot finish span {self.name!r}", err)

    def _prepare(self) -> None:
        prepare, self.prepare = self.prepare, None
        if prepare is not None:
            prepare()

    def row(self) -> dict[str, Any] | None:
        """This span's ``interactions`` row, built by the logger's writer thread once the span
        ended (None, counted and warned about, when a value set on it cannot be stored)."""
        try:
            self._prepare()
            row = self._interaction()
            bad = _bad_field(row)
            if bad is not None:
                raise ValidationError(f"{bad}: cannot store {row[bad]!r:.80}", field=bad)
            return row
        except Exception as exc:
            _state.count_failure(f"span {self.name!r} was not logged", exc)
            return None

    def _interaction(self) -> dict[str, Any]:
        """Every column of this span's row (the writer adds the derived ones)."""
        inp, out, chat = self.input, self.output, self.kind == "chat"
        span: dict[str, Any] = {"name": self.name, "kind": self.kind}
        messages = self.messages
        if messages is None and chat and inp.__class__ is dict and "messages" in inp:
            messages = inp["messages"]  # the messages column holds them; the rest stays in the input
            inp = {k: v for k, v in inp.items() if k != "messages"} or _UNSET
        if messages is not None:
            try:
                messages = check_messages(messages)
            except Exception:  # not an OpenAI-style list after all: keep it, as data
                span["messages"], messages = messages, None
        if inp is not _UNSET:
            span["input"] = inp
        if out is not _UNSET and out.__class__ is not str:
            span["output"] = out
        row = dict.fromkeys(INTERACTION_COLUMNS)
        row.update(id=self.id, ts=self.ts, kind="chat" if chat else "span", trace_id=self.trace_id,
                   parent_id=self.parent_id, model=self.model or "", user_id=self.user_id,
                   session_id=self.session_id, messages=messages, latency_ms=self.latency_ms,
                   status=self.status, error=self.error, prompt_tokens=self.prompt_tokens,
                   completion_tokens=self.completion_tokens, cost=self.cost, consent=True,
                   meta={"span": span} if self.metadata is None else {**self.metadata, "span": span})
        # Text columns hold text: a lone string argument and a string result (structured
        # inputs and outputs are in meta.span). A chat span always gets text.
        if messages is not None:
            row["query"] = last_user_message(messages)
        else:
            row["query"] = _text(inp, self.config.max_chars) if chat else _lone_str(inp)
        row["response"] = _text(out, self.config.max_chars) if chat else (out if out.__class__ is str else "")
        return row

    def __repr__(self) -> str:
        return f"Span({self.name!r}, kind={self.kind!r}, id={self.id!r}, trace_id={self.trace_id!r})"


def _lone_str(value: Any) -> str:
    """The text of an input that is one string argument (else "")."""
    if value.__class__ is dict and len(value) == 1:
        (only,) = value.values()
        if only.__class__ is str:
            return only
    return value if value.__class__ is str else ""


def _text(value: Any, max_chars: int) -> str:
    """The text column form of a chat span's input or output: a lone string as is, else JSON."""
    if value is _UNSET or value is None:
        return ""
    text = _lone_str(value)
    return text if text or value == "" else clip(encode_json(value), max_chars)


def start_span(name: str, kind: str = "span", *, logger: Any = None, activate: bool = False,
               user_id: str | None = None, session_id: str | None = None,
               metadata: dict[str, Any] | None = None) -> Span | None:
    """A started span, child of the current one (None when tracing is off or fails).

    For integrations (``wrap_openai``): the caller ends it with :meth:`Span.end`. With
    ``activate`` the OpenTelemetry span becomes current too (not the tuneloop one).
    """
    config = _state.config
    if not config.enabled:
        return None
    try:
        parent = _current.get()
        span = Span(name, kind, logger, parent, config)
        if user_id is not None:
            span.user_id = user_id
        if session_id is not None:
            span.session_id = session_id
        if metadata:
            span.set_metadata(**metadata)
        if _state.otel is not None and config.otel:
            _state.otel.start(span, parent, activate)
        return span
    except Exception as exc:
        _state.count_failure(f"cannot start span {name!r}", exc)
        return None


def _restore(token: Any) -> None:
    try:
        _current.reset(token)
    except ValueError:  # set in another context (a span entered in one task, left in another)
        _current.set(None)
