"""Helpers for monitor tests: a deterministic hashing embedder and interaction rows for the store."""
from __future__ import annotations

import hashlib
import random
import re

import numpy as np

from tuneloop.ids import new_id


class HashingEmbedder:
    """Each word maps to a fixed random vector (seeded by its hash); a text is their normalized sum."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[i] += self._word(word)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


SUPPORT = ["how do I reset my password for {x}", "where is my order {x}", "refund for {x} please",
           "change delivery address of {x}", "update billing card for {x}"]
COOKING = ["recipe for {x} with garlic", "how long to bake {x}", "vegan substitute for {x} in soup"]
WORDS = ["laptop", "phone", "jacket", "camera", "gift", "bread", "pasta", "salmon", "chair", "lamp"]


def interaction(ts: float, query: str, **kw) -> dict:
    # every row names the same keys: an executemany INSERT takes its columns from the first row
    return {"id": new_id(), "ts": ts, "query": query, "response": "ok", "model": "m", "kind": "chat",
            "version_id": "v1", "latency_ms": None, "status": "ok"} | kw


def queries(n: int, templates: list[str], rng: random.Random) -> list[str]:
    return [rng.choice(templates).format(x=rng.choice(WORDS)) for _ in range(n)]


def insert(db, table, rows: list[dict]) -> None:
    with db.begin() as conn:
        conn.execute(table.insert(), rows)
