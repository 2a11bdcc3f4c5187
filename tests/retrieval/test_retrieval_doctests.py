"""The examples in the retrieval docstrings run, and the package's public names resolve."""
from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

MODULES = ["documents", "index", "builds", "reembed", "search", "logs", "evaluation", "cycle", "monitor",
           "versions", "rag", "synthetic", "api"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    from tuneloop.store import db as store_db

    store_db._migrated.clear()  # every example opens a fresh in-memory database
    monkeypatch.chdir(tmp_path)  # examples that build an index without a root write under ./.tuneloop
    module = importlib.import_module(f"tuneloop.retrieval.{name}")
    assert doctest.testmod(module).failed == 0


def test_train_docstrings():
    for name in ("tuneloop.train.reranker", "tuneloop.train.retriever"):
        assert doctest.testmod(importlib.import_module(name)).failed == 0


def test_public_surface_is_lazy():
    import tuneloop.retrieval as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018
    code = "import sys, tuneloop.retrieval, tuneloop.retrieval.commands; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # the CLI stays quick to start
