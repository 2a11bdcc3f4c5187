"""Fixtures for monitor tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test modules import monitor_helpers by name; under --import-mode=importlib pytest does not
# put test folders on sys.path, so this folder is added here (conftests load first).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor_helpers import HashingEmbedder  # noqa: E402


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder()
