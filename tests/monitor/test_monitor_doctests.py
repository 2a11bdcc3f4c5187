"""The examples in the monitor package's docstrings run; each module's __all__ names real objects."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["drift", "_drift_base", "_drift_stats", "_drift_geometry", "behaviour", "operations", "topics",
           "reports", "metrics", "commands"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # reports' example opens "sqlite:///:memory:"; the store remembers migrated URLs per process
    from tuneloop.store import db as store_db

    store_db._migrated.clear()
    module = importlib.import_module(f"tuneloop.monitor.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and (result.attempted > 0 or name.startswith("_drift_base"))


@pytest.mark.parametrize("name", [m for m in MODULES if not m.startswith("_")])
def test_public_surface(name):
    module = importlib.import_module(f"tuneloop.monitor.{name}")
    for attr in module.__all__:
        assert hasattr(module, attr), (name, attr)
