"""``tuneloop rewards | judge | sample-for-annotation``: thin shells over the signals package.

    tuneloop rewards                          # infer implicit signals, recompute rewards
    tuneloop judge --since 1717000000 --model smollm2
    tuneloop judge --openai-url http://localhost:8001/v1 --openai-model qwen
    tuneloop sample-for-annotation --count 100
"""
from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

__all__ = ["register"]

_DB = typer.Option(None, "--db", help="Database URL or SQLite path (default: the global --db / settings).")


def _open_db(ctx: typer.Context, url: str | None):
    from tuneloop.datasets.commands import _open_db as open_db

    return open_db(ctx, url)


def rewards(ctx: typer.Context, since: float | None = typer.Option(None, help="Feedback newer than this epoch time."),
            no_implicit: bool = typer.Option(False, "--no-implicit", help="Skip implicit-signal inference."),
            db: str | None = _DB) -> None:
    """Infer implicit feedback (regenerate, continue) and recompute rewards incrementally."""
    from tuneloop.signals.implicit import infer_implicit_feedback
    from tuneloop.signals.rewards import update_rewards

    database = _open_db(ctx, db)
    out: dict[str, Any] = {}
    if not no_implicit:
        imp = infer_implicit_feedback(database, since)
        out.update(regenerate=imp.regenerate, continued=imp.continued)
    res = update_rewards(database, since)
    out.update(rewards_updated=res.updated, watermark=res.watermark)
    typer.echo(json.dumps(out))


def _backend(model: str | None, openai_url: str | None, openai_model: str | None, api_key: str | None):
    if openai_url:
        from tuneloop.models.openai_backend import OpenAIBackend

        return OpenAIBackend(openai_url, api_key=api_key, model=openai_model or "")
    from tuneloop.models.local import LocalBackend

    return LocalBackend(model or "smollm2", max_new_tokens=32)


def judge(ctx: typer.Context, since: float | None = typer.Option(None, help="Interactions after this epoch time."),
          model: str | None = typer.Option(None, help="Local judge model: smollm2 (default), tiny, or a folder."),
          openai_url: str | None = typer.Option(None, help="OpenAI-compatible base URL of the judge (…/v1)."),
          openai_model: str | None = typer.Option(None, help="Model name at the OpenAI-compatible judge."),
          api_key: str | None = typer.Option(None, envvar="TUNELOOP_JUDGE_API_KEY", help="Judge API key."),
          overwrite: bool = typer.Option(False, help="Re-score interactions that already have a quality score."),
          heuristics_only: bool = typer.Option(False, "--heuristics-only", help="No model: heuristic scores only."),
          db: str | None = _DB) -> None:
    """Score interactions: heuristics + LLM-as-judge (1-5 rubric) into quality_score."""
    from tuneloop.signals.judge import Judge, score_interactions

    backend = None if heuristics_only else _backend(model, openai_url, openai_model, api_key)
    try:
        res = score_interactions(_open_db(ctx, db), Judge(backend) if backend else None, since, overwrite=overwrite)
    finally:
        if backend is not None:
            backend.close()
    typer.echo(json.dumps({"scored": res.scored, "judged": res.judged, "watermark": res.watermark}))


def sample_for_annotation(ctx: typer.Context, count: int = typer.Option(100, "--count", "-n", min=1,
                                                                        help="How many to queue."),
                          since: float | None = typer.Option(None, help="Interactions after this epoch time."),
                          embedder: str = typer.Option("hashing", help="Novelty embedder: hashing, minilm, a folder."),
                          top_fraction: float = typer.Option(0.7, help="Share taken from the top of the ranking."),
                          seed: int = typer.Option(0, help="Seed of the random share."),
                          db: str | None = _DB) -> None:
    """Queue interactions for annotation: 70% by priority (new topic, edge case, engagement,
    uncertainty, negative feedback), 30% at random."""
    from tuneloop.models.embed import get_embedder
    from tuneloop.signals.sampling import sample_for_annotation as sample

    res = sample(_open_db(ctx, db), count, since=since, embedder=get_embedder(embedder), top_fraction=top_fraction,
                 seed=seed)
    Console(stderr=True).print(f"queued {res.queued} of {res.considered} candidates")
    typer.echo(json.dumps({"queued": res.queued, "considered": res.considered, "reasons": res.reasons}))


def register(app: typer.Typer) -> None:
    """Add ``tuneloop rewards``, ``tuneloop judge`` and ``tuneloop sample-for-annotation``."""
    app.command("rewards")(rewards)
    app.command("judge")(judge)
    app.command("sample-for-annotation")(sample_for_annotation)
