"""Fixtures for the capture tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib keeps test folders off sys.path; the tests import capture_helpers
# (plain functions: a live uvicorn server, a database lock), so this folder goes on it here.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def make_logger(tmp_path):
    """Build UsageLoggers that are closed after the test; spools go under tmp_path."""
    from tuneloop.capture import UsageLogger

    made = []

    def make(**kw):
        kw.setdefault("spool_path", tmp_path / f"spool{len(made)}.jsonl")
        lg = UsageLogger(**kw)
        made.append(lg)
        return lg

    yield make
    for lg in made:
        lg.close(timeout=5)
