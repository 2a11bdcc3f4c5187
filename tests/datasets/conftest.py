"""Helpers for dataset tests: write interactions, feedback, annotations with every column."""
from __future__ import annotations

import itertools

import pytest

from tuneloop.store import schema

_counter = itertools.count()

_INTERACTION_DEFAULTS = {"kind": "chat", "user_id": "u1", "session_id": None, "query": "", "messages": None,
                         "response": "", "status": "ok", "quality_score": 0.9, "reward": None,
                         "failure_category": None, "consent": True, "meta": None, "version_id": None}


def make_interaction(i, query, response, **kw):
    """An interactions row with every column the tests use (ts increasing by default)."""
    row = {**_INTERACTION_DEFAULTS, "id": str(i), "ts": float(kw.pop("ts", next(_counter))), "query": query,
           "response": response}
    if row["messages"] is None and "messages" not in kw:
        row["messages"] = [{"role": "user", "content": query}]
    row.update(kw)
    return row


@pytest.fixture
def add(db):
    """add(table_name, rows): insert rows (each completed to the same keys) into a table."""
    def _add(table: str, rows: list[dict]):
        keys = sorted({k for r in rows for k in r})
        full = [{k: r.get(k) for k in keys} for r in rows]
        with db.begin() as conn:
            conn.execute(getattr(schema, table).insert(), full)
    return _add


@pytest.fixture
def interaction():
    return make_interaction
