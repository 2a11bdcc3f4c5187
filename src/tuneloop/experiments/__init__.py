"""Online experiments: sticky assignment, A/B, canary ramp, shadow, Thompson bandit, always-valid
statistics, and the promote / roll back decisions (seed 002's ``ABTestManager``)."""
from tuneloop.experiments.analysis import Comparison
from tuneloop.experiments.assignment import Assignment, bucket, make_assigner
from tuneloop.experiments.config import ABTestConfig, Guardrails
from tuneloop.experiments.manager import ABTestManager, start_experiment
from tuneloop.experiments.records import Experiment
from tuneloop.experiments.router import ExperimentRouter, Route

__all__ = ["ABTestConfig", "ABTestManager", "Assignment", "Comparison", "Experiment", "ExperimentRouter",
           "Guardrails", "Route", "bucket", "make_assigner", "start_experiment"]
