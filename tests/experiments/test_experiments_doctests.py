"""The examples in the experiments package's docstrings run, and its public surface is what __all__ says."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["analysis", "assignment", "bandit", "canary", "commands", "config", "manager", "records", "router", "stats"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # Docstrings open "sqlite:///:memory:" databases; store.db remembers migrated URLs and (with
    # SQLAlchemy 2.1 rendering ":memory:" as "%3Amemory%3A") skips migrating a second in-memory one.
    from tuneloop.store import db as store_db

    store_db._migrated.clear()
    module = importlib.import_module(f"tuneloop.experiments.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_public_surface():
    import tuneloop.experiments as pkg

    assert set(pkg.__all__) >= {"ABTestConfig", "ABTestManager", "ExperimentRouter", "Route", "Comparison"}
    for name in pkg.__all__:
        assert getattr(pkg, name).__doc__, name
