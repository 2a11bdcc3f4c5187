"""``tuneloop demo``: the main job (see sim/demo.py)."""
from __future__ import annotations

from pathlib import Path

import typer


def demo(fast: bool = typer.Option(False, "--fast", help="Tiny model and addition (about 2 minutes); CI runs this."),
         data_dir: Path = typer.Option(Path("./.tuneloop/demo"), help="Where the demo keeps its store, runs and report."),
         seed: int = typer.Option(0, help="Seed of the world."),
         cycles: int = typer.Option(2, help="Stop after this many retraining cycles."),
         budget: float | None = typer.Option(None, help="Time budget in seconds (default 110 fast, 840 full)."),
         cache_dir: Path | None = typer.Option(None, help="Model cache kept across runs (default: DATA_DIR/cache)."),
         levers: str = typer.Option("prompt,adapter", help="Levers in the order the loop tries them "
                                    "(prompt: the task's candidate prompts; adapter: LoRA fine-tuning).")) -> None:
    """Simulated users with a hidden preference use the gateway; the loop improves the model by itself."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tuneloop.sim.demo import DemoConfig, run_demo

    kw = {"data_dir": data_dir / ("fast" if fast else "full"), "seed": seed, "max_cycles": cycles, "cache_dir": cache_dir,
          "levers": tuple(x.strip() for x in levers.split(",") if x.strip())}
    if budget is not None:
        kw["time_budget_s"] = budget
    cfg = DemoConfig.fast_preset(**kw) if fast else DemoConfig(**kw)
    report = run_demo(cfg)
    lift = report.get("lift") or {}
    raise typer.Exit(0 if lift.get("significant") else 2)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
