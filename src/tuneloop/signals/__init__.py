"""Signals: feedback -> one reward per interaction; implicit signals; heuristics; LLM judge;
annotation sampling.

>>> from tuneloop.signals import compute_reward
>>> compute_reward([{"kind": "copy"}, {"kind": "continue"}])
4.0
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RewardWeights": "tuneloop.signals.rewards",
    "compute_reward": "tuneloop.signals.rewards",
    "update_rewards": "tuneloop.signals.rewards",
    "ImplicitConfig": "tuneloop.signals.implicit",
    "infer_signals": "tuneloop.signals.implicit",
    "infer_implicit_feedback": "tuneloop.signals.implicit",
    "score_response": "tuneloop.signals.heuristics",
    "Judge": "tuneloop.signals.judge",
    "ensemble_quality": "tuneloop.signals.judge",
    "score_interactions": "tuneloop.signals.judge",
    "record_preferences": "tuneloop.signals.judge",
    "sample_for_annotation": "tuneloop.signals.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuneloop.signals' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
