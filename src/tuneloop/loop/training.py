"""The loop's training step: TRL LoRA in a subprocess (or seed 002's ``train_fn``), idempotent.

The train run id is derived from the loop run (``<run id>-train<attempt>``): after a crash the
step finds a succeeded run and reuses its adapter, or retries a failed/interrupted one, at most
``MAX_ATTEMPTS`` times. A failed run is never registered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from tuneloop.errors import TrainingError
from tuneloop.loop.config import LoopConfig
from tuneloop.store import Database, schema

MAX_ATTEMPTS = 2


def _attempts(db: Database, run_id: str) -> list[dict]:
    tr = schema.train_runs
    return db.fetch_all(sa.select(tr).where(tr.c.id.like(f"{run_id}-train%")).order_by(tr.c.id))


def _trainer(config: LoopConfig, train_fn: Callable | None):
    if train_fn is not None:
        from tuneloop.train.callable import CallableTrainer

        return CallableTrainer(train_fn)
    from tuneloop.train.trl_trainer import TRLTrainer

    return TRLTrainer({"method": "sft", **config.train_config})


def as_served(db: Database, path: str, out_dir: Path) -> str:
    """The dataset as the champion's prompt presents it to the model (the new adapter is served
    under that prompt, so it is trained under it too); ``path`` itself when there is no prompt."""
    import json

    from tuneloop.prompts.spec import apply_to_example
    from tuneloop.registry.versions import Registry

    champion = Registry(db).champion()
    spec = champion.prompt_spec if champion else None
    if spec is None or spec.is_empty:
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{Path(path).stem}.as-served.jsonl"
    with open(path, encoding="utf-8") as src, open(dest, "w", encoding="utf-8") as dst:
        for line in src:
            if line.strip():
                dst.write(json.dumps(apply_to_example(json.loads(line), spec), ensure_ascii=False) + "\n")
    return str(dest)


def train_candidate(db: Database, config: LoopConfig, run: dict, out_dir: Path, *,
                    train_fn: Callable[[str], dict] | None = None) -> dict[str, Any]:
    """Train (or find the finished training of) this cycle's candidate."""
    from tuneloop.models.resolve import resolve_model
    from tuneloop.train.runner import TrainingRunner

    attempts = _attempts(db, run["id"])
    done = next((a for a in attempts if a["status"] == "succeeded"), None)
    trainer = _trainer(config, train_fn)
    datasets = (run["details"] or {}).get("datasets") or {}
    method = getattr(trainer, "method", "sft")
    data = datasets.get(method) or datasets.get("sft") or next(iter(datasets.values()), None)
    if data is None:
        raise TrainingError(f"no dataset for training method {method!r} in this cycle (built: {sorted(datasets)})")
    base = str(resolve_model(config.base_model, config.data_dir))
    if done is None:
        if len(attempts) >= MAX_ATTEMPTS:
            raise TrainingError(f"training failed {len(attempts)} times; last error: {attempts[-1]['error']}")
        run_id = f"{run['id']}-train{len(attempts) + 1}"
        runner = TrainingRunner(db, show_progress=False)
        path = data["path"] if train_fn is not None else as_served(db, data["path"], out_dir)
        result = runner.run(trainer, path, out_dir / f"train{len(attempts) + 1}", base,
                            dataset_id=data["id"], run_id=run_id)
        done = {"id": run_id, "metrics": result.metrics, "output_dir": result.output_dir,
                "adapter_path": result.adapter_path, "model_path": result.model_path}
    else:
        adapter = Path(done["output_dir"]) / "adapter"
        done = {**done, "adapter_path": str(adapter) if adapter.exists() else None,
                "model_path": None if adapter.exists() else str(Path(done["output_dir"]) / "model")}
    return {"train_run_id": done["id"], "adapter_path": done["adapter_path"], "model_path": done["model_path"],
            "base_model": base, "metrics": done["metrics"], "method": method,
            "config": getattr(getattr(trainer, "config", None), "to_dict", lambda: {"train_fn": True})()}
