"""The dashboard's pure helpers (filters, cursors, the loop timeline), its docstring examples
and its public surface."""
from __future__ import annotations

import doctest
import importlib

import pytest

from tuneloop.errors import ValidationError
from tuneloop.server.dashboard.queries import InteractionFilter, decode_cursor, encode_cursor, timeline_segments

MODULES = ["", ".annotation", ".drift", ".overview", ".projection", ".queries", ".rollup", ".web"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    from tuneloop.store import db as store_db

    store_db._migrated.clear()  # examples open "sqlite:///:memory:"
    module = importlib.import_module(f"tuneloop.server.dashboard{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("name", MODULES)
def test_public_surface(name):
    module = importlib.import_module(f"tuneloop.server.dashboard{name}")
    for attr in module.__all__:
        assert hasattr(module, attr), (name, attr)


def test_cursor_round_trip_and_errors():
    for ts in (0.0, 1714521600.123456789, 1e-7):
        assert decode_cursor(encode_cursor(ts, "01a2-b_c")) == (ts, "01a2-b_c")
    for bad in ("", "123", "abc_def", "nan_x", "inf_x", "12_"):
        with pytest.raises(ValidationError, match="cursor"):
            decode_cursor(bad)


def test_filter_parsing_and_round_trip():
    f = InteractionFilter.parse({"version": " v2 ", "user": "u1", "start": "2024-05-01", "end": "2024-05-02",
                                 "feedback": "report", "status": "error", "q": "x" * 500})
    assert (f.version, f.start, f.end - f.start, len(f.q)) == ("v2", 1714521600.0, 2 * 86400.0, 200)
    assert InteractionFilter.parse(f.query_params()) == f
    assert InteractionFilter.parse({}).conditions() == []
    with pytest.raises(ValidationError, match="date like"):
        InteractionFilter.parse({"end": "05/01/2024"})
    with pytest.raises(ValidationError, match="status"):
        InteractionFilter.parse({"status": "fine"})


def test_timeline_segments():
    history = [["triggered", 0.0], ["dataset_built", 10.0], ["trained", 40.0], ["promoted", 100.0]]
    segs = timeline_segments(history, end=100.0)
    assert [s.state for s in segs] == ["triggered", "dataset_built", "trained", "promoted"]
    assert [(s.start, s.end) for s in segs] == [(0, 10), (10, 40), (40, 100), (100, 100)]
    assert sum(s.width for s in segs) == pytest.approx(100.0)
    assert all(s.width >= 4.0 for s in segs)  # the instant final state stays visible
    assert [s.x for s in segs] == pytest.approx([0.0] + [sum(x.width for x in segs[:k]) for k in range(1, 4)])
    assert segs[2].width > segs[1].width > segs[0].width  # otherwise proportional to time
    many = timeline_segments([[f"s{k}", float(k)] for k in range(40)], end=40.0)
    assert sum(s.width for s in many) == pytest.approx(100.0) and len({s.width for s in many}) == 1
    assert timeline_segments([], end=1.0) == []
