"""The examples in the registry's docstrings run."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["versions", "commands"])
def test_docstring_examples(name):
    # Docstrings open "sqlite:///:memory:" databases; store.db remembers migrated URLs and (with
    # SQLAlchemy 2.1 rendering ":memory:" as "%3Amemory%3A") skips migrating a second in-memory one.
    from tuneloop.store import db as store_db

    store_db._migrated.clear()
    module = importlib.import_module(f"tuneloop.registry.{name}")
    assert doctest.testmod(module).failed == 0


def test_public_surface():
    import tuneloop.registry as pkg

    for name in pkg.__all__:
        assert hasattr(pkg, name)
