"""Datasets: production interactions -> clean SFT / DPO / KTO / retriever / reranker data.

>>> from tuneloop.datasets import TrainingDataGenerator, DataGeneratorConfig   # doctest: +SKIP
>>> TrainingDataGenerator(db, DataGeneratorConfig(kind="dpo")).generate("dpo.jsonl")  # doctest: +SKIP

Names load lazily (numpy and scipy come with the first use, not with ``import tuneloop``).
"""
from __future__ import annotations

from tuneloop._lazy import lazy_exports

_EXPORTS = {
    "TrainingDataGenerator": "tuneloop.datasets.generator",
    "DataGeneratorConfig": "tuneloop.datasets.generator",
    "GenerationResult": "tuneloop.datasets.generator",
    "Sample": "tuneloop.datasets.formats",
    "render": "tuneloop.datasets.formats",
    "parse": "tuneloop.datasets.formats",
    "NearDuplicateIndex": "tuneloop.datasets.dedup",
    "GoldenGuard": "tuneloop.datasets.dedup",
    "MinHasher": "tuneloop.datasets.dedup",
    "near_duplicate_mask": "tuneloop.datasets.dedup",
    "exact_key": "tuneloop.datasets.dedup",
    "to_parquet": "tuneloop.datasets.export",
    "to_hf_dataset": "tuneloop.datasets.export",
    "write_llamafactory_info": "tuneloop.datasets.export",
    "get_dataset": "tuneloop.datasets.snapshot",
    "list_datasets": "tuneloop.datasets.snapshot",
    "dataset_members": "tuneloop.datasets.snapshot",
    "datasets_containing": "tuneloop.datasets.snapshot",
    "verify_snapshot": "tuneloop.datasets.snapshot",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports('tuneloop.datasets', _EXPORTS, globals())
