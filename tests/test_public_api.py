"""The seed's names are the public API, and importing them stays light."""
import subprocess
import sys

import tuneloop

SEED_NAMES = {"UsageLogger", "TrainingDataGenerator", "DataGeneratorConfig", "AutoRetrainer", "TriggerConfig",
              "ABTestManager", "ABTestConfig", "ContinuousLearningLoop", "LoopConfig"}


def test_all_seed_names_are_exported_and_resolve():
    assert SEED_NAMES <= set(tuneloop.__all__)
    for name in tuneloop.__all__:
        assert getattr(tuneloop, name).__name__ == name
    assert SEED_NAMES <= set(dir(tuneloop))


def test_sdk_import_pulls_no_torch_transformers_or_numpy():
    code = ("import sys, tuneloop; from tuneloop import UsageLogger, TriggerConfig, LoopConfig; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
