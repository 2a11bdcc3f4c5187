"""Capture: the ``UsageLogger`` SDK, feedback, statistics (no torch, numpy or web framework here).

>>> from tuneloop.capture import UsageLogger
>>> logger = UsageLogger(db_path="usage.db")            # doctest: +SKIP
>>> rid = logger.log(query="hi", response="hello", model="m")  # doctest: +SKIP
"""
from tuneloop.capture.logger import UsageLogger
from tuneloop.capture.openai_wrap import wrap_openai
from tuneloop.capture.queries import iter_interactions, statistics, trace_tree
from tuneloop.capture.records import (
    feedback_row,
    interaction_row,
    normalize_feedback,
    normalize_interaction,
    write_feedback,
    write_interactions,
)
from tuneloop.capture.tracing import (
    Span,
    TraceConfig,
    configure_tracing,
    current_span,
    last_interaction_id,
    trace,
)

__all__ = [
    "Span",
    "TraceConfig",
    "UsageLogger",
    "configure_tracing",
    "current_span",
    "last_interaction_id",
    "trace",
    "wrap_openai",
    "feedback_row",
    "interaction_row",
    "iter_interactions",
    "normalize_feedback",
    "normalize_interaction",
    "statistics",
    "trace_tree",
    "write_feedback",
    "write_interactions",
]
