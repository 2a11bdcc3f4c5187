"""The light surface: importing the packages and the protocol must not pull torch (the SDK stays small)."""
from __future__ import annotations

import subprocess
import sys

import tuneloop.models as models
import tuneloop.train as train


def test_packages_import_without_torch():
    code = ("import sys, tuneloop.models, tuneloop.train, tuneloop.train.runner, tuneloop.train.trl_trainer, "
            "tuneloop.models.factory, tuneloop.models.openai_backend; "
            "bad = [m for m in ('torch', 'transformers', 'trl', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve():
    for name in models.__all__:
        assert getattr(models, name) is not None
    for name in train.__all__:
        assert getattr(train, name) is not None
