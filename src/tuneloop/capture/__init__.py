"""Capture: the ``UsageLogger`` SDK, feedback, statistics (no torch, numpy or web framework here).

>>> from tuneloop.capture import UsageLogger
>>> logger = UsageLogger(db_path="usage.db")            # doctest: +SKIP
>>> rid = logger.log(query="hi", response="hello", model="m")  # doctest: +SKIP
"""
from tuneloop.capture.logger import UsageLogger
from tuneloop.capture.queries import iter_interactions, statistics
from tuneloop.capture.records import (
    feedback_row,
    interaction_row,
    normalize_feedback,
    normalize_interaction,
    write_feedback,
    write_interactions,
)

__all__ = [
    "UsageLogger",
    "feedback_row",
    "interaction_row",
    "iter_interactions",
    "normalize_feedback",
    "normalize_interaction",
    "statistics",
    "write_feedback",
    "write_interactions",
]
