"""tuneloop: continuous learning for LLM applications.

The seed's names are the public API. Importing ``tuneloop`` is light: heavy modules load
only when their name is first used, so ``from tuneloop import UsageLogger`` never imports
torch.

>>> import tuneloop
>>> sorted(tuneloop.__all__)[:3]
['ABTestConfig', 'ABTestManager', 'AutoRetrainer']
"""
from __future__ import annotations

from tuneloop._lazy import lazy_exports

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
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports('tuneloop', _EXPORTS, globals())
