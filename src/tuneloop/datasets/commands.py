"""``tuneloop dataset build|list|show``: thin shells over the generator and the snapshots.

    tuneloop dataset build --kind sft --format messages --output data/sft.jsonl --min-quality 0.7
    tuneloop dataset build --kind dpo --output data/dpo.jsonl --validation 0.05
    tuneloop dataset list --kind dpo
    tuneloop dataset show <id>
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["register"]

dataset_app = typer.Typer(help="Build dataset snapshots from the store (SFT, DPO, KTO, triplets, reranker); list, show.",
                          no_args_is_help=True)
_DB = typer.Option(None, "--db", help="Database URL or SQLite path (default: the global --db / settings).")


def _open_db(ctx: typer.Context, url: str | None):
    from tuneloop.store import Database

    if url:
        return Database.open(url)
    obj = ctx.find_root().obj
    if isinstance(obj, dict):   # tests pass {"db": Database | url}
        db = obj.get("db")
        return db if not isinstance(db, str) else Database.open(db)
    if hasattr(obj, "open_db"):
        return obj.open_db()
    from tuneloop.config import load_settings

    return Database.open(load_settings().database_url())


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


@dataset_app.command("build")
def build(ctx: typer.Context,
          output: Path = typer.Option(..., "--output", "-o", help="Output JSONL path."),
          kind: str = typer.Option("sft", help="sft | dpo | kto | triplets | reranker."),
          format: str | None = typer.Option(None, "--format", help="Row format (default: the kind's; chatml for sft)."),
          min_quality: float | None = typer.Option(0.7, help="Minimum quality_score (negative: no filter)."),
          min_feedback: float | None = typer.Option(None, help="Minimum reward (user feedback)."),
          no_dedup: bool = typer.Option(False, "--no-dedup", help="Keep exact and near duplicates."),
          near_threshold: float = typer.Option(0.8, help="Near-duplicate Jaccard threshold."),
          no_pii: bool = typer.Option(False, "--no-pii", help="Do not scrub PII (not recommended)."),
          validation: float = typer.Option(0.0, help="Share of prompts held out for validation."),
          max_per_topic: int | None = typer.Option(None, help="Cap rows per topic cluster."),
          existing: Path | None = typer.Option(None, help="Rehearsal buffer (JSONL of the same kind) to merge."),
          since: float | None = typer.Option(None, help="Only interactions after this epoch time."),
          parquet: bool = typer.Option(False, help="Also write <output>.parquet."),
          as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
          db: str | None = _DB) -> None:
    """Build a dataset snapshot and print what each filter dropped."""
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator

    cfg = DataGeneratorConfig(
        kind=kind, format_type=format, min_quality_score=None if min_quality is None or min_quality < 0 else min_quality,
        min_user_feedback=min_feedback, deduplicate=not no_dedup, near_dedup_threshold=near_threshold,
        scrub_pii=not no_pii, validation_fraction=validation, max_per_topic=max_per_topic,
        include_existing_data=existing is not None, existing_data_path=str(existing) if existing else None,
        since=since, export_parquet=parquet, show_progress=not as_json)
    res = TrainingDataGenerator(_open_db(ctx, db), cfg).generate(output)
    if as_json:
        typer.echo(json.dumps({"dataset_id": res.dataset_id, "final_count": res.final_count, "path": res.path,
                               "validation_path": res.validation_path, "content_hash": res.content_hash,
                               "dropped": res.dropped, "pii": res.pii_counts, "counts": res.counts}))
        return
    table = Table(title=f"dataset {res.dataset_id}: {res.final_count} {res.kind} rows ({res.format_type})",
                  show_header=False)
    table.add_row("file", res.path + (f" (+ {res.validation_path})" if res.validation_path else ""))
    table.add_row("train / validation", f"{res.train_count} / {res.validation_count}")
    for reason, n in sorted(res.dropped.items(), key=lambda kv: -kv[1]):
        if n:
            table.add_row(f"dropped: {reason}", str(n))
    table.add_row("PII scrubbed", ", ".join(f"{k} {v}" for k, v in res.pii_counts.items()) or "none")
    table.add_row("content hash", res.content_hash)
    Console().print(table)


@dataset_app.command("list")
def list_cmd(ctx: typer.Context, kind: str | None = typer.Option(None, help="Only this kind."),
             limit: int = typer.Option(50, help="How many, newest first."),
             as_json: bool = typer.Option(False, "--json"), db: str | None = _DB) -> None:
    """List dataset snapshots, newest first."""
    from tuneloop.datasets.snapshot import list_datasets

    rows = list_datasets(_open_db(ctx, db), kind=kind, limit=limit)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "config"} for r in rows], default=str))
        return
    table = Table(title=f"{len(rows)} datasets")
    for col in ("id", "kind", "format", "rows", "created", "path", "tainted"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["kind"], r["format"] or "", str(r["row_count"]), _when(r["created_at"]),
                      r["path"] or "", "yes" if r["tainted"] else "")
    Console().print(table)


@dataset_app.command("show")
def show(ctx: typer.Context, dataset_id: str = typer.Argument(..., help="Dataset id."),
         as_json: bool = typer.Option(False, "--json"), db: str | None = _DB) -> None:
    """Show one snapshot: config, counts per stage, whether its file still matches its hash."""
    from tuneloop.datasets.snapshot import get_dataset, verify_snapshot

    database = _open_db(ctx, db)
    row: dict[str, Any] = get_dataset(database, dataset_id)
    row["file_matches_hash"] = verify_snapshot(database, dataset_id)
    if as_json:
        typer.echo(json.dumps(row, default=str))
        return
    table = Table(title=f"dataset {dataset_id}", show_header=False)
    for key, value in row.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``tuneloop dataset ...`` to the root command."""
    app.add_typer(dataset_app, name="dataset")
