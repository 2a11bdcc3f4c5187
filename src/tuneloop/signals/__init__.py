"""Signals: feedback -> one reward per interaction; implicit signals; heuristics; LLM judge;
annotation sampling.

>>> from tuneloop.signals import compute_reward
>>> compute_reward([{"kind": "copy"}, {"kind": "continue"}])
4.0
"""
from __future__ import annotations

from tuneloop._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports('tuneloop.signals', _EXPORTS, globals())
