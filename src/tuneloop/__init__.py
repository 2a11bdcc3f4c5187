"""tuneloop: continuous learning for LLM applications.

The seed's names are the public API. Importing ``tuneloop`` is light: heavy modules load
only when their name is first used, so ``from tuneloop import UsageLogger`` never imports
torch.

>>> import tuneloop
>>> sorted(tuneloop.__all__)[:3]
['ABTestConfig', 'ABTestManager', 'AutoRetrainer']
"""
from __future__ import annotations

import os

from tuneloop._lazy import lazy_exports

# OpenMP threads that spin while waiting (libgomp's default) starve each other as soon as the
# cores are shared: a 7-token SmolLM2 answer took 13 s instead of 0.66 s at load 8 on 2 cores.
# Passive waiting costs nothing measurable on an idle machine. Read when torch loads libgomp,
# so it is set here, before any torch import; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {
    "UsageLogger": "tuneloop.capture.logger",
    "TrainingDataGenerator": "tuneloop.datasets.generator",
    "DataGeneratorConfig": "tuneloop.datasets.generator",
    "AutoRetrainer": "tuneloop.loop.service",
    "TriggerConfig": "tuneloop.loop.triggers",
    "ABTestManager": "tuneloop.experiments.manager",
    "ABTestConfig": "tuneloop.experiments.manager",
    "ContinuousLearningLoop": "tuneloop.loop.service",
    "LoopConfig": "tuneloop.loop.config",
    "Database": "tuneloop.store.db",
    "trace": "tuneloop.capture.tracing",
    "configure_tracing": "tuneloop.capture.tracing",
    "current_span": "tuneloop.capture.tracing",
    "last_interaction_id": "tuneloop.capture.tracing",
    "TraceConfig": "tuneloop.capture.tracing",
    "wrap_openai": "tuneloop.capture.openai_wrap",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports('tuneloop', _EXPORTS, globals())
