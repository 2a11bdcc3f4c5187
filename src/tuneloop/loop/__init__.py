"""The loop: triggers, the resumable cycle, the daemon. It composes the other packages."""
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import CycleRunner, StepResult
from tuneloop.loop.service import AutoRetrainer, ContinuousLearningLoop
from tuneloop.loop.triggers import TriggerChecker, TriggerConfig, TriggerResult

__all__ = ["AutoRetrainer", "ContinuousLearningLoop", "CycleRunner", "LoopConfig", "StepResult",
           "TriggerChecker", "TriggerConfig", "TriggerResult"]
