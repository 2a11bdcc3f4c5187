"""``tuneloop demo``: a world of simulated users in which the model gets better by itself.

1. set up: a fresh SQLite store, the champion v0 (SmolLM2-135M-Instruct, or with ``fast``
   the tiny model taught a little addition), the golden set, the gateway on loopback;
2. rounds of traffic: simulated users ask through the gateway with the official ``openai``
   client, react (thumbs on 10-30% of answers, regenerate when unhappy, copy when happy);
3. after each round: implicit signals and rewards are updated and the loop iterates by
   itself (triggers -> dataset -> LoRA -> gate -> A/B with the sequential test -> promote);
   the first lever it pulls is the prompt (the best of the task's candidate prompts), then
   fine-tuning once no candidate is left: users' preference is partly met by instruction;
4. the report: satisfaction per round and per version with 95% intervals, every decision
   with its statistics, golden pass rates, time per stage; and a PNG plot.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import socket
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.demo")


@dataclass
class DemoConfig:
    """One demo run. ``fast`` uses the tiny model (CI); otherwise SmolLM2-135M-Instruct."""

    fast: bool = False
    data_dir: Path = Path("./.tuneloop/demo")
    seed: int = 0
    users: int = 200
    requests_per_round: int = 120
    max_rounds: int = 60
    max_cycles: int = 3  # the prompt lever's cycle counts too
    time_budget_s: float = 800.0  # no round starts that would likely end past it
    workers: int = 8  # the gateway batches concurrent requests to a local model
    temperature: float = 0.7
    min_new_samples: int = 40
    min_samples_per_version: int = 150
    max_samples_per_version: int | None = 400  # an undecided A/B ends there: the champion stays
    challenger_traffic: float = 0.5
    train_steps: int = 32
    max_tokens: int = 16  # users want <= 8 words: longer answers fail anyway, and cost batch time
    gate_threshold: float = 0.7  # a candidate must answer 70% of the golden set the way users want
    levers: tuple[str, ...] = ("prompt", "adapter")  # try the task's candidate prompts, then fine-tune
    fresh: bool = True
    cache_dir: Path | None = None  # converted/pretrained models, kept across runs (default: beside data_dir)

    @classmethod
    def fast_preset(cls, **kw: Any) -> "DemoConfig":
        base = dict(fast=True, users=200, requests_per_round=150, max_rounds=40, max_cycles=2, time_budget_s=110.0, workers=4, temperature=0.9,
                    min_new_samples=20, min_samples_per_version=60, max_samples_per_version=None, train_steps=40,
                    max_tokens=24, gate_threshold=0.2)
        base.update(kw)
        return cls(**base)


@dataclass
class RoundStats:
    round: int
    t: float
    n: int
    satisfied: int
    per_version: dict[str, list[int]]  # version -> [satisfied, n]
    champion: str | None
    challenger: str | None
    loop_action: str = ""
    loop_state: str = ""


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    from tuneloop.experiments.stats import wilson_interval

    return wilson_interval(k, n) if n else (0.0, 1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoServer:
    """The real gateway (uvicorn) on a loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "DemoServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the demo gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# ---------------------------------------------------------------- set-up
def _task(cfg: DemoConfig):
    from tuneloop.sim.world import AdditionTask, CapitalsTask

    return AdditionTask(seed=cfg.seed) if cfg.fast else CapitalsTask(seed=cfg.seed)


def _base_model(cfg: DemoConfig, cache: Path, task) -> Path:
    if cfg.fast:
        from tuneloop.models.tiny import build_tiny_model
        from tuneloop.sim.pretrain import pretrain_addition

        tiny = build_tiny_model(cache / "models" / "tiny", seed=cfg.seed)
        return pretrain_addition(tiny, cache / "models" / "tiny-addition", seed=cfg.seed, task=task)
    from tuneloop.models.resolve import resolve_model

    return resolve_model("smollm2", cache)


def loop_config(cfg: DemoConfig, db_path: Path, base: Path, cache: Path):
    from tuneloop.loop.config import LoopConfig

    return LoopConfig(
        db_path=str(db_path), output_dir=str(cfg.data_dir / "runs"), data_dir=str(cache), check_interval_seconds=1,
        trigger_config={"min_new_samples": cfg.min_new_samples, "min_quality_score": 0.5, "cooldown_hours": 0,
                        "enable_quality_drop": False, "enable_error_rate": False},
        # Questions come from one template, so a traffic question and a golden one differ in one
        # word (word Jaccard 0.78): the leak guard's MinHash estimate at 0.8 flagged half of them.
        generator_config={"min_quality_score": None, "min_user_feedback": 0.5, "deduplicate": True, "format_type": "messages",
                          "leak_threshold": 0.9},
        ab_test_config={"initial_challenger_traffic": cfg.challenger_traffic, "min_duration_hours": 0,
                        "min_samples_per_version": cfg.min_samples_per_version,
                        "max_samples_per_version": cfg.max_samples_per_version, "primary_metric": "reward_positive_rate",
                        "min_improvement_threshold": 0.0, "sequential_tuning_samples": 500},
        # The tiny model's template marks assistant turns, so the loss can skip the prompt.
        train_config={"method": "sft", "max_steps": cfg.train_steps, "learning_rate": 1e-3 if cfg.fast else 5e-4,
                      "lora_r": 16, "lora_alpha": 32, "batch_size": 8 if cfg.fast else 4, "num_threads": 1 if cfg.fast else None,
                      "assistant_only_loss": cfg.fast},
        base_model=str(base), gate_threshold=cfg.gate_threshold, max_cycles=cfg.max_cycles,
        # 1st lever: the best of the task's candidate prompts (prompts.yaml, written by setup); then LoRA
        levers={"order": list(cfg.levers)},
        prompt_config={"candidates": str(cfg.data_dir / "prompts.yaml"), "strategy": "best"} if "prompt" in cfg.levers else {})


def setup(cfg: DemoConfig) -> dict[str, Any]:
    """A fresh store, v0 as champion, the golden set. Model files are cached across runs."""
    from tuneloop.evaluate import golden
    from tuneloop.registry.versions import Registry

    cache = Path(cfg.cache_dir) if cfg.cache_dir else cfg.data_dir.parent / "cache"
    if cfg.fresh and cfg.data_dir.exists():
        shutil.rmtree(cfg.data_dir)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    task = _task(cfg)
    base = _base_model(cfg, cache, task)
    db_path = cfg.data_dir / "tuneloop.db"
    db = Database.open(path=db_path)
    registry = Registry(db, actor="demo")
    if registry.find("v0") is None:
        registry.register("v0", backend="local", base_model=str(base), params={"max_tokens": cfg.max_tokens},
                          lineage={"note": "the pre-existing production model"})
        registry.promote("v0", reason="initial champion")
        lines = [json.dumps({"prompt": q.prompt, "expected": q.expected, "checker": task.checker,
                             "checker_args": task.checker_args, "tags": [task.name]}) for q in task.golden()]
        golden.import_jsonl(db, lines)
    import yaml

    (cfg.data_dir / "prompts.yaml").write_text(yaml.safe_dump({"candidates": [dict(c) for c in task.PROMPT_CANDIDATES]},
                                                               sort_keys=False))
    return {"db": db, "task": task, "base": base, "cache": cache, "db_path": db_path}


# ---------------------------------------------------------------- the run
def _aliases(db: Database) -> dict[str, str]:
    return {r["name"]: r["version_id"] for r in db.fetch_all(sa.select(schema.aliases.c.name, schema.aliases.c.version_id))}


def _update_signals(db: Database, watermark: dict[str, float | None]) -> None:
    from tuneloop.signals.implicit import infer_implicit_feedback
    from tuneloop.signals.rewards import update_rewards

    infer_implicit_feedback(db, since=watermark.get("implicit"))
    update = update_rewards(db, since=watermark.get("rewards"))
    watermark["rewards"] = getattr(update, "watermark", None)


def run_demo(cfg: DemoConfig, *, console=None) -> dict[str, Any]:
    """Run the world until ``max_cycles`` cycles ended or the time budget is spent."""
    from rich.console import Console

    from tuneloop.loop.gating import shared_pool
    from tuneloop.loop.service import ContinuousLearningLoop
    from tuneloop.loop.stages import DefaultStages
    from tuneloop.server.app import create_app
    from tuneloop.server.routing import RegistryRouter
    from tuneloop.sim.traffic import TrafficClient, run_round
    from tuneloop.sim.world import make_users

    console = console or Console()
    t0 = time.monotonic()
    world = setup(cfg)
    db, task = world["db"], world["task"]
    console.print(f"[bold]tuneloop demo[/] ({'tiny model, addition' if cfg.fast else 'SmolLM2-135M-Instruct, capitals'}): "
                  f"base ready in {time.monotonic() - t0:.1f}s, store {world['db_path']}")
    lcfg = loop_config(cfg, world["db_path"], world["base"], world["cache"])
    pool = shared_pool(lcfg)
    # SmolLM2 answers concurrent users ~2-3x faster in micro-batches; the tiny model needs none.
    router = RegistryRouter(db, pool, ttl_s=0.5, seed=cfg.seed, batch_local=not cfg.fast)
    app = create_app(db=db, insecure_dev=True, router=router)
    loop = ContinuousLearningLoop(lcfg, db=db, stages=DefaultStages(db, lcfg, on_change=router.invalidate, pool=pool))
    users = make_users(cfg.users, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    rounds: list[RoundStats] = []
    watermark: dict[str, float | None] = {}
    with DemoServer(app) as server:
        client = TrafficClient(server.url, temperature=cfg.temperature)
        for r in range(1, cfg.max_rounds + 1):
            serving = _aliases(db)  # who served this round (the loop may promote after it)
            outcomes = run_round(client, users, cfg.requests_per_round, task.sample, task.check, rng=rng, workers=cfg.workers)
            app.state.gateway.logger.flush()
            _update_signals(db, watermark)
            per_version: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for o in outcomes:
                per_version[o.version_id][0] += o.satisfied
                per_version[o.version_id][1] += 1
            result = loop.run_iteration()
            stats = RoundStats(r, time.monotonic() - t0, len(outcomes), sum(o.satisfied for o in outcomes), dict(per_version),
                               serving.get("champion"), serving.get("challenger"), result.get("action", ""), result.get("state", ""))
            rounds.append(stats)
            _status_line(console, stats)
            done = loop.total_retrains() >= cfg.max_cycles and loop.get_status_summary()["status"]["current_stage"] == "idle"
            last_round = stats.t - (rounds[-2].t if len(rounds) > 1 else 0.0)
            if done or time.monotonic() - t0 + last_round > cfg.time_budget_s:
                break
    from tuneloop.sim.report import build_report, print_report, write_outputs

    report = build_report(db, rounds, cfg, time.monotonic() - t0)
    write_outputs(report, rounds, cfg.data_dir)
    print_report(console, report, cfg.data_dir)
    return report


def _status_line(console, s: RoundStats) -> None:
    lo, hi = wilson(s.satisfied, s.n)
    versions = " ".join(f"{v}:{k}/{n}" for v, (k, n) in sorted(s.per_version.items()))
    console.print(f"round {s.round:>2} {s.t:6.1f}s  satisfied {s.satisfied / max(s.n, 1):5.1%} [{lo:.0%}, {hi:.0%}]  "
                  f"champion={s.champion} challenger={s.challenger or '-'}  ({versions})  loop: {s.loop_action} {s.loop_state}")
