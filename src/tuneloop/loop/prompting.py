"""The prompt lever's cycle: failure cases instead of a training set, the ``prompt`` trainer
instead of LoRA, and a prompt version over the champion's base and adapter. The offline gate
and the online A/B test are the same as for adapters.

Idempotent like the rest of the loop: the failure snapshot is found by its path, the train
run by its id (``<run id>-train<attempt>``), the version by its id.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import TrainingError, ValidationError
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.levers import LeverChoice, choose_lever, lever_history
from tuneloop.prompts.spec import PromptSpec
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.loop")

MAX_ATTEMPTS = 2


# ---------------------------------------------------------------- which lever
def tried_fingerprints(db: Database) -> set[str]:
    """Prompts already tried: any registered version's, and every one an earlier prompt run scored."""
    mv, tr = schema.model_versions, schema.train_runs
    out: set[str] = set()
    for r in db.fetch_all(sa.select(mv.c.prompt).where(mv.c.prompt.is_not(None))):
        try:
            spec = PromptSpec.from_value(r["prompt"])
        except ValidationError:  # a prompt stored before specs were validated: it cannot match a candidate
            continue
        if spec is not None:
            out.add(spec.fingerprint())
    for r in db.fetch_all(sa.select(tr.c.metrics).where(tr.c.method == "prompt", tr.c.status == "succeeded")):
        out.update((r["metrics"] or {}).get("tried") or [])
    return out


def prompt_available(db: Database, config: LoopConfig) -> bool | str:
    """True when the prompt lever has something to try, else why not."""
    if "prompt" not in config.levers.order:
        return "not in levers.order"
    from tuneloop.prompts.candidates import untried
    from tuneloop.registry.versions import Registry
    from tuneloop.train.prompt import PromptTrainerConfig

    if Registry(db).champion() is None:
        return "no champion to serve a new prompt with"
    cfg = PromptTrainerConfig.from_dict(config.prompt_config)
    if cfg.rewriter:
        return True
    candidates = cfg.load()
    left = untried(candidates, tried_fingerprints(db))
    return True if left else f"all {len(candidates)} candidate prompts were tried and no rewriter is configured"


def plan_lever(db: Database, config: LoopConfig, *, before: float | None = None) -> LeverChoice:
    """The lever of the next cycle (or of the cycle that started at ``before``)."""
    if config.levers.order == ("adapter",):
        return LeverChoice("adapter", "adapter: the only lever in order")
    history = lever_history(db, before=before)
    return choose_lever(config.levers, history, {"prompt": prompt_available(db, config)})


# ---------------------------------------------------------------- 1. failure cases
def build_failures(db: Database, config: LoopConfig, out_dir: Path) -> dict[str, Any]:
    """The champion's failed interactions as the prompt trainer's dataset (a ``failures`` snapshot,
    so a deletion request taints the prompt versions written from them)."""
    from tuneloop.datasets.snapshot import file_hash, record_snapshot
    from tuneloop.prompts.failures import collect_failures, summarize
    from tuneloop.registry.versions import Registry
    from tuneloop.train.prompt import PromptTrainerConfig, write_failures

    path = out_dir / "failures.jsonl"
    d = schema.datasets
    found = db.fetch_one(sa.select(d).where(d.c.path == str(path)).order_by(d.c.created_at.desc()).limit(1))
    if found is not None:
        return {"id": found["id"], "path": str(path), "rows": found["row_count"], "counts": found["counts"]}
    cfg = PromptTrainerConfig.from_dict(config.prompt_config)
    champion = Registry(db).champion()
    cases = collect_failures(db, version_id=champion.id if champion else None, limit=max(cfg.max_failures, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    n = write_failures(cases, path)
    counts = summarize(cases)
    ds_id = record_snapshot(db, kind="failures", format="jsonl", path=str(path), content_hash=file_hash(path),
                            row_count=n, config={"source": "prompt lever", "version_id": champion and champion.id},
                            counts=counts, members=[(c.interaction_id, "failure") for c in cases])
    return {"id": ds_id, "path": str(path), "rows": n, "counts": counts}


# ---------------------------------------------------------------- 2. the prompt trainer
def _score_fn(db: Database, champion: Any, pool: Any, golden_set: str):
    """Golden pass rate of the champion served with a given prompt (None: no prompt)."""
    from tuneloop.evaluate import golden
    from tuneloop.evaluate.runner import evaluate
    from tuneloop.models.factory import backend_for_version

    examples = golden.list_examples(db, golden_set)
    if not examples or champion is None:
        return None

    def score(spec: PromptSpec | None) -> float:
        row = {**champion.to_dict(), "prompt": spec.to_dict() if spec else None}
        result = evaluate(backend_for_version(row, pool), examples, progress=False, params={"temperature": 0.0})
        return result.pass_rate

    return score


def _rewriter(db: Database, spec: dict[str, Any] | None, pool: Any):
    if not spec:
        return None
    from tuneloop.models.factory import backend_for_version
    from tuneloop.registry.versions import Registry

    if spec.get("version"):
        return backend_for_version(Registry(db).resolve(str(spec["version"])).to_dict(), pool)
    return backend_for_version({"id": "prompt-rewriter", **spec}, pool)


def _attempts(db: Database, run_id: str) -> list[dict]:
    tr = schema.train_runs
    return db.fetch_all(sa.select(tr).where(tr.c.id.like(f"{run_id}-train%")).order_by(tr.c.id))


def train_prompt_candidate(db: Database, config: LoopConfig, run: dict, out_dir: Path, pool: Any) -> dict[str, Any]:
    """Run (or find the finished run of) the prompt trainer for this cycle."""
    from tuneloop.registry.versions import Registry
    from tuneloop.train.prompt import PromptTrainer, PromptTrainerConfig
    from tuneloop.train.runner import TrainingRunner

    cfg = PromptTrainerConfig.from_dict(config.prompt_config)
    champion = Registry(db).champion()
    attempts = _attempts(db, run["id"])
    done = next((a for a in attempts if a["status"] == "succeeded"), None)
    if done is None:
        if len(attempts) >= MAX_ATTEMPTS:
            raise TrainingError(f"the prompt trainer failed {len(attempts)} times; last error: {attempts[-1]['error']}")
        if pool is None:
            from tuneloop.loop.gating import shared_pool

            pool = shared_pool(config)
        score = _score_fn(db, champion, pool, cfg.select_on or config.golden_set)
        trainer = PromptTrainer(cfg, base=champion.prompt_spec if champion else None, tried=tried_fingerprints(db),
                                score_fn=score, rewriter=_rewriter(db, cfg.rewriter, pool))
        data = ((run["details"] or {}).get("datasets") or {}).get("failures") or {}
        run_id = f"{run['id']}-train{len(attempts) + 1}"
        result = TrainingRunner(db, show_progress=False).run(
            trainer, data.get("path") or str(out_dir / "failures.jsonl"), out_dir / f"train{len(attempts) + 1}",
            champion.base_model if champion else config.base_model, dataset_id=data.get("id"), run_id=run_id)
        done = {"id": run_id, "metrics": result.metrics, "output_dir": result.output_dir}
    prompt_path = Path(done["output_dir"]) / "prompt.json"
    prompt = json.loads(prompt_path.read_text(encoding="utf-8"))
    return {"train_run_id": done["id"], "method": "prompt", "prompt": prompt, "prompt_path": str(prompt_path),
            "metrics": done["metrics"], "base_model": champion.base_model if champion else config.base_model,
            "adapter_path": champion.adapter_path if champion else None,
            "model_path": champion.model_path if champion else None, "config": cfg.to_dict()}


def no_improvement(train: dict[str, Any]) -> str | None:
    """Why a 'best' prompt run found nothing worth testing (None when its pick beats the champion)."""
    m = train.get("metrics") or {}
    if m.get("improves") is False:
        return (f"no candidate prompt beat the champion's on the golden set "
                f"(best {m.get('chosen_score', 0):.0%} vs {m.get('champion_score', 0):.0%})")
    return None


# ---------------------------------------------------------------- 3. the prompt version
def register_prompt_version(db: Database, run: dict, vid: str) -> None:
    """The champion's base and adapter with the new prompt, lineage saying the prompt lever made it."""
    from tuneloop.registry.versions import Registry

    train = (run["details"] or {}).get("train") or {}
    datasets = (run["details"] or {}).get("datasets") or {}
    metrics = train.get("metrics") or {}
    Registry(db, actor="loop").register_prompt(
        vid, train.get("prompt"), parent="champion", dataset_id=run["dataset_id"], train_run_id=run["train_run_id"],
        metrics={k: metrics[k] for k in ("chosen_score", "champion_score", "considered") if k in metrics},
        lineage={"loop_run_id": run["id"], "prompt_source": metrics.get("source"),
                 "prompt_fingerprint": metrics.get("fingerprint"),
                 "datasets": {k: {"id": v.get("id"), "rows": v.get("rows")} for k, v in datasets.items()}})
