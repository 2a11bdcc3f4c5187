"""The embedded vector index on every installed engine: upserts, deletes, snapshots, recall."""
from __future__ import annotations

import numpy as np
import pytest

from tuneloop.errors import StoreError, ValidationError
from tuneloop.retrieval.index import EmbeddedIndex, VectorIndex, available_engines, label_of

ENGINES = available_engines()


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_upsert_replace_delete_and_search(engine):
    rng = np.random.default_rng(0)
    v = _unit(rng.normal(size=(200, 16)).astype(np.float32))
    ix = EmbeddedIndex(16, engine=engine)
    assert isinstance(ix, VectorIndex)
    ix.upsert([f"d{i}" for i in range(200)], v, ["h"] * 200)
    assert ix.search(v[:1], 1)[0][0][0] == "d0"
    ix.upsert(["d0"], v[7:8], ["h2"])  # d0 now holds d7's vector: d0's old place is empty
    top = [i for i, _ in ix.search(v[:1], 3)[0]]
    assert "d0" not in top
    assert {i for i, _ in ix.search(v[7:8], 2)[0]} == {"d0", "d7"}
    assert ix.content_hashes(["d0", "d1", "zz"]) == {"d0": "h2", "d1": "h"}
    assert ix.delete(["d7", "d7", "nope"]) == 1 and len(ix) == 199
    assert "d7" not in [i for i, _ in ix.search(v[7:8], 10)[0]]
    ix.upsert(["d7"], v[7:8], ["h"])  # a deleted id can come back
    assert ix.search(v[7:8], 1)[0][0][0] in ("d0", "d7")
    hits = ix.search(v[:5], 500)
    assert all(len(h) == 200 for h in hits)  # k larger than the index: everything, once
    assert all(len({i for i, _ in h}) == len(h) for h in hits)


@pytest.mark.parametrize("engine", ENGINES)
def test_snapshot_roundtrip_and_a_crash_mid_save_keeps_the_previous_one(engine, tmp_path):
    rng = np.random.default_rng(1)
    v = _unit(rng.normal(size=(50, 8)).astype(np.float32))
    ix = EmbeddedIndex(8, engine=engine, path=tmp_path)
    ix.upsert([f"d{i}" for i in range(50)], v, [str(i) for i in range(50)])
    ix.watermark = 123.0
    ix.save()
    ix.delete(["d3"])
    (tmp_path / "snap-99999999999999999999-1").mkdir()  # a save that died before CURRENT moved
    back = EmbeddedIndex.load(tmp_path)
    assert len(back) == 50 and back.watermark == 123.0 and back.engine == ix.engine
    assert back.search(v[3:4], 1)[0][0][0] == "d3"
    back.delete(["d3"])
    back.upsert(["new"], v[3:4], ["n"])
    back.save()
    again = EmbeddedIndex.load(tmp_path)
    assert again.search(v[3:4], 1)[0][0][0] == "new" and "d3" not in again
    assert len(list(tmp_path.glob("snap-*"))) <= 3


def test_load_of_an_empty_folder_names_the_problem(tmp_path):
    with pytest.raises(StoreError, match="no readable index snapshot"):
        EmbeddedIndex.load(tmp_path)


def test_bad_input_is_refused():
    ix = EmbeddedIndex(4, engine="numpy")
    with pytest.raises(ValidationError, match="4-d"):
        ix.upsert(["a"], np.ones((1, 5), np.float32), ["h"])
    with pytest.raises(ValidationError, match="no repeated ids"):
        ix.upsert(["a", "a"], np.ones((2, 4), np.float32), ["h", "h"])
    with pytest.raises(ValidationError, match="k must be at least 1"):
        ix.search(np.ones((1, 4), np.float32), 0)
    assert ix.search(np.ones((1, 4), np.float32), 3) == [[]]


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "numpy"])
def test_hnsw_recall_against_exact_search(engine):
    rng = np.random.default_rng(2)
    centers = _unit(rng.normal(size=(50, 32)))
    x = _unit(centers[rng.integers(0, 50, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(np.float32)
    q = _unit(centers[rng.integers(0, 50, 100)] + 0.3 * rng.normal(size=(100, 32))).astype(np.float32)
    ids = [str(i) for i in range(3000)]
    ann, exact = EmbeddedIndex(32, engine=engine), EmbeddedIndex(32, engine="numpy")
    for ix in (ann, exact):
        ix.upsert(ids, x, ids)
    got, want = ann.search(q, 10), exact.search(q, 10)
    recall = np.mean([len({i for i, _ in g} & {i for i, _ in w}) / 10 for g, w in zip(got, want)])
    assert recall >= 0.95


def test_labels_are_stable_63_bit_integers():
    assert label_of("doc") == label_of("doc") != label_of("doc2")
    assert all(0 <= label_of(f"x{i}") < 2**63 for i in range(100))
