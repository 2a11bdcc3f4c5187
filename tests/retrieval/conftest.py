"""Fixtures for the retrieval tests: a real index (usearch or hnswlib when installed) on the database under test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib keeps test folders off sys.path; the tests import retrieval_helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval_helpers import CountingEmbedder  # noqa: E402


@pytest.fixture
def index_root(tmp_path):
    return tmp_path / "indexes"


@pytest.fixture
def embedder():
    return CountingEmbedder(256)


@pytest.fixture
def rindex(db, index_root, embedder):
    from tuneloop.retrieval.search import RetrievalIndex

    index = RetrievalIndex(db, embedder=embedder, root=index_root)
    yield index
    index.close()


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    """Loaded embedders and rerankers are cached per process; each test starts clean."""
    from tuneloop.retrieval.versions import clear_cache

    clear_cache()
    yield
    clear_cache()
