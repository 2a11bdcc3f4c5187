"""The loop's offline gate: candidate and champion answer the golden set; the gate decides."""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from tuneloop.loop.config import LoopConfig
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.loop")


def backend_of(db: Database, version_id: str, pool: Any):
    from tuneloop.models.factory import backend_for_version
    from tuneloop.registry.versions import Registry

    return backend_for_version(Registry(db).get(version_id).to_dict(), pool)


def evaluate_version(db: Database, version_id: str, examples: list, pool: Any, *, golden_set: str,
                     golden_version: int, reuse: bool = True, record: bool = True):
    """The version's golden result: the stored run on this golden version, or a fresh one."""
    from tuneloop.evaluate.runner import evaluate, latest_eval_run, record_eval_run

    if reuse:
        found = latest_eval_run(db, version_id, golden_set=golden_set, golden_version=golden_version)
        if found is not None:
            return found
    result = evaluate(backend_of(db, version_id, pool), examples, progress=False, model=version_id,
                      params={"temperature": 0.0})
    run_id = record_eval_run(db, version_id, result, golden_set=golden_set, golden_version=golden_version) if record else None
    return run_id, result


def gate_candidate(db: Database, config: LoopConfig, version_id: str, pool: Any = None) -> dict[str, Any]:
    """Evaluate ``version_id`` against the champion on the golden set and apply the gate."""
    from tuneloop.evaluate import golden
    from tuneloop.evaluate.gate import gate
    from tuneloop.evaluate.runner import record_eval_run
    from tuneloop.registry.versions import Registry

    er = schema.eval_runs
    done = db.fetch_one(sa.select(er).where(er.c.version_id == version_id, er.c.passed.is_not(None))
                        .order_by(er.c.created_at.desc()).limit(1))
    if done is not None:  # this candidate was gated already (a resumed cycle): keep that verdict
        g = done["gate"] or {}
        return {"passed": bool(done["passed"]), "reasons": list(g.get("reasons") or []), "eval_run_id": done["id"],
                "pass_rate": done["pass_rate"], "champion_pass_rate": g.get("champion_pass_rate"),
                "p_value": g.get("p_value"), "test": g.get("test"), "n": done["n"]}
    pool = pool or shared_pool(config)
    examples = golden.list_examples(db, config.golden_set)
    if not examples:
        log.warning("golden set %r is empty: the offline gate passes every candidate", config.golden_set)
        return {"passed": True, "reasons": [f"golden set {config.golden_set!r} is empty"], "eval_run_id": None}
    gver = golden.current_version(db, config.golden_set)
    champion = Registry(db).champion()
    champ = None
    if champion is not None and champion.id != version_id:
        champ = evaluate_version(db, champion.id, examples, pool, golden_set=config.golden_set, golden_version=gver)[1]
    _, cand = evaluate_version(db, version_id, examples, pool, golden_set=config.golden_set, golden_version=gver,
                               reuse=False, record=False)
    decision = gate(cand, champ, threshold=config.gate_threshold, alpha=config.gate_alpha, required_tags=None)
    run_id = record_eval_run(db, version_id, cand, baseline=champion.id if champ is not None else None,
                             golden_set=config.golden_set, golden_version=gver, gate=decision)
    return {"passed": decision.passed, "reasons": list(decision.reasons), "eval_run_id": run_id,
            "pass_rate": decision.pass_rate, "champion_pass_rate": decision.champion_pass_rate,
            "p_value": decision.p_value, "test": decision.test, "n": decision.n}


_POOLS: dict[str, Any] = {}


def shared_pool(config: LoopConfig):
    """One model pool per data dir and process, shared by the gateway and the gate."""
    from tuneloop.models.local import LocalModelPool

    key = str(config.data_dir)
    if key not in _POOLS:
        _POOLS[key] = LocalModelPool(data_dir=config.data_dir)
    return _POOLS[key]
