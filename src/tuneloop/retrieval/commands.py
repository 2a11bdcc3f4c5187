"""``tuneloop docs ...``: the document corpus and its indexes, from the command line.

    tuneloop docs add FILE.jsonl|DIR            add or update documents (unchanged ones are skipped)
    tuneloop docs delete ID...                  delete documents
    tuneloop docs search QUERY [-k 5]           search the served index
    tuneloop docs reembed --embedder V          build V's index (resumable; --switch to serve it)
    tuneloop docs builds                        index builds and progress
    tuneloop docs switch V | docs rollback      serve V's index | serve the previous index again
    tuneloop docs golden FILE.jsonl             import retrieval golden cases {"query", "relevant"}
    tuneloop docs cycle                         one retriever + reranker learning cycle
    tuneloop docs monitor                       hit rate, score and embedding drift report

Thin shells over :mod:`tuneloop.retrieval`; heavy imports happen inside the commands.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["register", "docs_app"]

docs_app = typer.Typer(no_args_is_help=True, help="Documents for retrieval: add, delete, search, re-embed, learn.")
out = Console()
err = Console(stderr=True)

EmbedderOpt = typer.Option(None, "--embedder", "-e", help="Retriever version or embedder name (default: the served one).")
EngineOpt = typer.Option("auto", "--engine", help="Index engine: auto | usearch | hnswlib | numpy.")
RootOpt = typer.Option(None, "--index-dir", help="Folder of the indexes (default: beside the database).")


def _db(ctx: typer.Context):
    from tuneloop.registry.commands import open_db

    return open_db(ctx)


def _run(fn, *args: Any, **kw: Any) -> Any:
    from tuneloop.errors import TuneloopError

    try:
        return fn(*args, **kw)
    except TuneloopError as exc:
        err.print(f"[red]error[/red] ({type(exc).__name__}): {escape(exc.message)}", highlight=False)
        raise typer.Exit(1) from None


def _index(ctx: typer.Context, embedder: str | None, engine: str, root: str | None):
    from tuneloop.retrieval.search import RetrievalIndex

    return RetrievalIndex(_db(ctx), embedder=embedder, engine=engine, root=root)


@docs_app.command("add")
def add(ctx: typer.Context, path: Path = typer.Argument(..., help="A .jsonl file ({id, text, meta} per line) or a folder."),
        embedder: str | None = EmbedderOpt, engine: str = EngineOpt, root: str | None = RootOpt,
        batch_size: int = typer.Option(256, min=1, help="Documents per transaction.")) -> None:
    """Add or update documents; only new or changed texts are embedded."""
    from tuneloop.retrieval.documents import load_documents

    def go() -> Any:
        docs = list(load_documents(path))
        with _index(ctx, embedder, engine, root) as index:
            return index.upsert(docs, batch_size=batch_size, progress=True)

    r = _run(go)
    out.print(f"added {len(r.added)}, updated {len(r.updated)}, metadata only {len(r.meta_only)}, "
              f"unchanged {len(r.unchanged)}")


@docs_app.command("delete")
def delete(ctx: typer.Context, ids: list[str] = typer.Argument(..., help="Document ids."),
           embedder: str | None = EmbedderOpt, engine: str = EngineOpt, root: str | None = RootOpt) -> None:
    """Delete documents: no search returns them again."""
    def go() -> Any:
        with _index(ctx, embedder, engine, root) as index:
            return index.delete(ids)

    deleted = _run(go)
    missing = [i for i in ids if i not in deleted]
    out.print(f"deleted {len(deleted)}" + (f"; not found: {', '.join(missing)}" if missing else ""))
    if missing and not deleted:
        raise typer.Exit(1)


@docs_app.command("search")
def search(ctx: typer.Context, query: str = typer.Argument(..., help="Search text."),
           k: int = typer.Option(5, "-k", min=1, max=1000, help="Documents to show."),
           rerank: bool = typer.Option(False, "--rerank", help="Rescore with the reranker champion."),
           embedder: str | None = EmbedderOpt, engine: str = EngineOpt, root: str | None = RootOpt,
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Search the corpus (logged like any search)."""
    def go() -> Any:
        with _index(ctx, embedder, engine, root) as index:
            return index.search(query, k, rerank=rerank or None)

    result = _run(go)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{result.retriever_version}: {query!r} ({result.latency_ms:.1f} ms)")
    for col in ("rank", "id", "score", "text"):
        table.add_column(col)
    for h in result.hits:
        table.add_row(str(h.rank), escape(h.id), f"{h.score:.4f}", escape(h.text[:100]))
    out.print(table)
    out.print(f"retrieval_id {result.retrieval_id}")


@docs_app.command("reembed")
def reembed_cmd(ctx: typer.Context, embedder: str = typer.Option(..., "--embedder", "-e", help="Retriever version or embedder name."),
                switch: bool = typer.Option(False, "--switch", help="Serve the new index when it is ready."),
                background: bool = typer.Option(False, "--background", help="Run in a background process."),
                max_docs_per_s: float | None = typer.Option(None, help="Throttle (documents per second)."),
                batch_size: int = typer.Option(128, min=1, help="Documents per embedding batch."),
                engine: str = EngineOpt, root: str | None = RootOpt) -> None:
    """Re-embed the corpus into EMBEDDER's index; resumes an interrupted run."""
    from tuneloop.retrieval.reembed import reembed, start_reembed

    db = _db(ctx)
    if background:
        proc = start_reembed(db.url.render_as_string(hide_password=False), embedder, root=root, engine=engine,
                             batch_size=batch_size, max_docs_per_s=max_docs_per_s, switch=switch)
        out.print(f"re-embedding in the background (pid {proc.pid}); follow it with `tuneloop docs builds`")
        return
    build = _run(reembed, db, embedder, root=root, engine=engine, batch_size=batch_size,
                 max_docs_per_s=max_docs_per_s, switch=switch)
    out.print(f"index {build.id} for {build.embedder_version}: {build.status}, {build.done} documents")


@docs_app.command("builds")
def builds(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Index builds, newest first, with progress and status."""
    from tuneloop.retrieval.builds import list_builds

    rows = [b.to_dict() for b in _run(list_builds, _db(ctx))]
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="index builds")
    for col in ("id", "embedder_version", "status", "engine", "progress", "done", "error"):
        table.add_column(col)
    for b in rows:
        prog = "-" if b["progress"] is None else f"{100 * b['progress']:.0f}%"
        table.add_row(b["id"], escape(b["embedder_version"]), b["status"], str(b["engine"]), prog, str(b["done"]),
                      escape((b["error"] or "")[:60]))
    out.print(table)


@docs_app.command("switch")
def switch(ctx: typer.Context, version: str = typer.Argument(..., help="Retriever version or embedder name.")) -> None:
    """Serve VERSION's ready index (the current one is kept for rollback)."""
    from tuneloop.retrieval.builds import find_build, switch_to

    db = _db(ctx)
    found = _run(find_build, db, version)
    if found is None:
        err.print(f"[red]error[/red]: no ready index for {escape(version)}; run `tuneloop docs reembed -e {version}`")
        raise typer.Exit(1)
    build = _run(switch_to, db, found.id)
    out.print(f"serving {build.embedder_version} (index {build.id})")


@docs_app.command("rollback")
def rollback(ctx: typer.Context, registry: bool = typer.Option(
        True, "--registry/--index-only", help="Also roll back the retriever champion in the registry.")) -> None:
    """Serve the previous index again, at once."""
    from tuneloop.retrieval.builds import rollback_index
    from tuneloop.retrieval.cycle import rollback_retriever

    db = _db(ctx)
    build = _run(rollback_retriever, db, reason="cli") if registry else _run(rollback_index, db)
    out.print(f"serving {build.embedder_version} (index {build.id})")


@docs_app.command("golden")
def golden(ctx: typer.Context, path: Path = typer.Argument(..., help='JSONL: {"query", "relevant": [ids] | {id: gain}}'),
           set_name: str = typer.Option("retrieval", "--set", help="Golden set name.")) -> None:
    """Import retrieval golden cases (versioned like every golden set)."""
    from tuneloop.errors import ValidationError
    from tuneloop.retrieval.evaluation import add_golden

    def cases() -> list[dict[str, Any]]:
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValidationError(f"{path}:{n}: not JSON ({exc})") from None
        return rows

    n = _run(lambda: add_golden(_db(ctx), cases(), set_name=set_name))
    out.print(f"added {n} retrieval cases to golden set {set_name!r}")


@docs_app.command("cycle")
def cycle(ctx: typer.Context, config: Path | None = typer.Option(None, "--config-json", help="RetrievalCycleConfig as JSON."),
          components: str = typer.Option("retriever,reranker", help="Comma-separated: retriever, reranker."),
          output_dir: str = typer.Option("./.tuneloop/runs", help="Where datasets and models go.")) -> None:
    """Run one retrieval learning cycle: guardrail, retriever, reranker (each gated on the golden set)."""
    from tuneloop.retrieval.cycle import RetrievalCycleConfig, retrieval_cycle

    data = json.loads(config.read_text()) if config else {}
    data.setdefault("components", tuple(c.strip() for c in components.split(",") if c.strip()))
    data.setdefault("output_dir", output_dir)
    data.setdefault("show_progress", True)
    result = _run(lambda: retrieval_cycle(_db(ctx), RetrievalCycleConfig(**data)))
    out.print_json(json.dumps(result.to_dict(), default=str))


@docs_app.command("monitor")
def monitor(ctx: typer.Context, reference_days: float = typer.Option(7, help="Days of the reference window."),
            current_days: float = typer.Option(1, help="Days of the current window.")) -> None:
    """Write a retrieval drift report (hit rate, score drift, embedding drift) and print it."""
    from tuneloop.retrieval.monitor import retrieval_monitor_report

    report_id, metrics = _run(retrieval_monitor_report, _db(ctx), reference_days=reference_days,
                              current_days=current_days)
    out.print_json(json.dumps({"id": report_id, **metrics}, default=str))


def register(app: typer.Typer) -> None:
    """Add ``tuneloop docs ...`` to the CLI."""
    app.add_typer(docs_app, name="docs")
