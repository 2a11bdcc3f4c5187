"""``tuneloop train run|list|show``: thin shells over :class:`~tuneloop.train.runner.TrainingRunner`.

    tuneloop train run --data sft.jsonl --method sft --base-model smollm2 --output runs/r1 \\
        --set lora_r=8 --set max_steps=32
    tuneloop train run --data dpo.jsonl --method dpo --backend llamafactory --base-model /models/base --output runs/r2
    tuneloop train run --data d.jsonl --backend command --output runs/r3 \\
        --command "python train.py {data_path} {base_model} {output_dir} {config_path}"
    tuneloop train list
    tuneloop train show RUN_ID
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from tuneloop.errors import ConfigError

train_app = typer.Typer(help="Train candidates (TRL LoRA SFT/DPO/KTO, any command, LLaMA-Factory) and list runs.",
                        no_args_is_help=True)
out = Console()


def _db(ctx: typer.Context, url: str | None):
    from tuneloop.store import Database

    if url:
        return Database.open(url)
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("db") is not None:
        db = obj["db"]
        return Database.open(db) if isinstance(db, str) else db
    if hasattr(obj, "open_db"):
        return obj.open_db()
    from tuneloop.config import load_settings

    return Database.open(load_settings().database_url())


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["lora_r=8", "target_modules=[\\"q_proj\\"]", "method=dpo"]`` -> values parsed as JSON where they can be."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


def build_trainer(backend: str, method: str, config: dict[str, Any], command: str | None):
    """(trainer, config) for the CLI's ``--backend``."""
    if backend == "trl":
        from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer

        cfg = TRLConfig.from_dict({"method": method, **config})
        return TRLTrainer(cfg), cfg
    if backend == "retriever":
        from tuneloop.train.retriever import RetrieverConfig, RetrieverTrainer

        cfg = RetrieverConfig.from_dict(config)
        return RetrieverTrainer(cfg), cfg
    if backend == "llamafactory":
        from tuneloop.train.llamafactory import llamafactory_trainer
        from tuneloop.train.trl_config import TRLConfig

        return llamafactory_trainer(method), TRLConfig.from_dict({"method": method, **config})
    if backend == "command":
        if not command:
            raise ConfigError("--backend command needs --command '... {data_path} {output_dir} ...'")
        from tuneloop.train.command import CommandTrainer

        return CommandTrainer(command, method=method), config
    if backend == "callable":
        if not command:
            raise ConfigError("--backend callable needs --command package.module:function")
        from tuneloop.train.callable import CallableTrainer

        return CallableTrainer(command, method=method), config
    raise ConfigError(f"unknown backend {backend!r}: trl | retriever | command | llamafactory | callable")


@train_app.command("run")
def run_cmd(ctx: typer.Context,
            data: Path = typer.Option(..., "--data", help="Training JSONL (TRL formats)."),
            output: Path = typer.Option(..., "--output", help="Folder for the adapter, logs and metrics."),
            method: str = typer.Option("sft", help="sft | dpo | kto (trl, llamafactory)."),
            base_model: str = typer.Option(None, help="smollm2 (default for trl) | tiny | a model folder."),
            backend: str = typer.Option("trl", help="trl | retriever | command | llamafactory | callable."),
            command: str = typer.Option(None, help="Command line (command backend) or module:function (callable)."),
            config: Path = typer.Option(None, help="JSON file with config fields."),
            set_: list[str] = typer.Option([], "--set", help="KEY=VALUE config override (repeatable)."),
            dataset_id: str = typer.Option(None, help="Dataset snapshot id, for lineage."),
            timeout: float = typer.Option(None, help="Kill the run after this many seconds."),
            db: str = typer.Option(None, "--db", help="Database URL or SQLite path.")) -> None:
    """Train in a subprocess; the run is recorded in train_runs (a crash is recorded failed)."""
    from tuneloop.train.runner import TrainingRunner

    if base_model is None and backend in ("trl", "llamafactory"):
        base_model = "smollm2"
    values = json.loads(config.read_text()) if config else {}
    values.update(parse_sets(set_))
    trainer, cfg = build_trainer(backend, method, values, command)
    result = TrainingRunner(_db(ctx, db), timeout_s=timeout).run(trainer, data, output, base_model, cfg,
                                                                 dataset_id=dataset_id)
    out.print(f"[green]succeeded[/green] run {result.run_id}: {result.artifact}")
    out.print_json(json.dumps(result.metrics, default=str))


@train_app.command("list")
def list_cmd(ctx: typer.Context, limit: int = typer.Option(20), db: str = typer.Option(None, "--db")) -> None:
    """Recent training runs."""
    from tuneloop.store import schema

    t = schema.train_runs
    rows = _db(ctx, db).fetch_all(sa.select(t).order_by(t.c.id.desc()).limit(limit))
    table = Table("id", "backend", "method", "status", "loss first→last", "output")
    for r in rows:
        m = r.get("metrics") or {}
        loss = (f"{m['train_loss_first']:.3f}→{m['train_loss_last']:.3f}"
                if m.get("train_loss_first") is not None and m.get("train_loss_last") is not None else "")
        table.add_row(r["id"], r["backend"], r["method"] or "", r["status"], loss, r["output_dir"] or "")
    out.print(table)


@train_app.command("show")
def show_cmd(ctx: typer.Context, run_id: str, db: str = typer.Option(None, "--db")) -> None:
    """One training run as JSON."""
    from tuneloop.errors import NotFoundError
    from tuneloop.store import schema

    row = _db(ctx, db).fetch_one(sa.select(schema.train_runs).where(schema.train_runs.c.id == run_id))
    if row is None:
        raise NotFoundError(f"no training run {run_id!r}")
    out.print_json(json.dumps(row, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


__all__ = ["register", "train_app", "build_trainer", "parse_sets"]
