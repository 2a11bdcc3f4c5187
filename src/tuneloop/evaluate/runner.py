"""Run a model over golden examples, check every answer, and record the run.

>>> from tuneloop.models.scripted import ScriptedBackend
>>> from tuneloop.evaluate.golden import example_from_dict
>>> ex = [example_from_dict({"prompt": "2+2?", "expected": "4", "checker": "number", "tags": ["math"]})]
>>> r = evaluate(ScriptedBackend({"2+2?": "4"}), ex, progress=False)
>>> (r.n, r.pass_rate, r.per_tag["math"].pass_rate)
(1, 1.0, 1.0)
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable

import sqlalchemy as sa

from tuneloop.errors import NotFoundError, UpstreamError, ValidationError
from tuneloop.evaluate.checkers import CheckContext, CheckResult, get_checker
from tuneloop.evaluate.golden import GoldenExample, example_from_dict
from tuneloop.ids import new_id, now
from tuneloop.store import schema

__all__ = ["ExampleResult", "TagMetrics", "EvalResult", "evaluate", "summarize", "record_eval_run",
           "load_eval_run", "latest_eval_run", "DEFAULT_PARAMS"]

# Greedy decoding: a gate must give the same answer twice for the same model.
DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0}


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """The model's answer to one example and the checker's verdict."""

    id: str
    output: str
    passed: bool
    score: float
    tags: tuple[str, ...] = ()
    checker: str = ""
    detail: str = ""
    error: str | None = None  # the backend failed on this example (counts as a fail)


@dataclass(frozen=True, slots=True)
class TagMetrics:
    n: int
    passed: int
    pass_rate: float
    mean_score: float


@dataclass(frozen=True)
class EvalResult:
    """A whole evaluation: pass rate, per-example results, metrics per tag, throughput."""

    n: int
    pass_rate: float
    results: tuple[ExampleResult, ...]
    per_tag: Mapping[str, TagMetrics]
    mean_score: float
    examples_per_s: float
    elapsed_s: float
    errors: int = 0
    model: str = ""

    def by_id(self) -> dict[str, ExampleResult]:
        return {r.id: r for r in self.results}

    def outputs(self) -> dict[str, str]:
        """Answers by example id (what a pairwise judge compares against)."""
        return {r.id: r.output for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [asdict(r) | {"tags": list(r.tags)} for r in self.results]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        results = tuple(ExampleResult(**(dict(r) | {"tags": tuple(r.get("tags") or ())})) for r in d["results"])
        per_tag = {k: TagMetrics(**v) for k, v in (d.get("per_tag") or {}).items()}
        return cls(n=d["n"], pass_rate=d["pass_rate"], results=results, per_tag=per_tag,
                   mean_score=d.get("mean_score", 0.0), examples_per_s=d.get("examples_per_s", 0.0),
                   elapsed_s=d.get("elapsed_s", 0.0), errors=d.get("errors", 0), model=d.get("model", ""))


def summarize(results: Sequence[ExampleResult], *, elapsed_s: float = 0.0, model: str = "") -> EvalResult:
    """Aggregate per-example results into an :class:`EvalResult` (pure)."""
    n = len(results)
    by_tag: dict[str, list[ExampleResult]] = defaultdict(list)
    for r in results:
        for tag in r.tags:
            by_tag[tag].append(r)
    per_tag = {tag: _tag_metrics(rs) for tag, rs in sorted(by_tag.items())}
    passed = sum(r.passed for r in results)
    return EvalResult(
        n=n, pass_rate=passed / n if n else 0.0, results=tuple(results), per_tag=per_tag,
        mean_score=sum(r.score for r in results) / n if n else 0.0,
        examples_per_s=n / elapsed_s if elapsed_s > 0 else 0.0, elapsed_s=elapsed_s,
        errors=sum(r.error is not None for r in results), model=model)


def _tag_metrics(rs: Sequence[ExampleResult]) -> TagMetrics:
    passed = sum(r.passed for r in rs)
    return TagMetrics(len(rs), passed, passed / len(rs), sum(r.score for r in rs) / len(rs))


def _coerce(examples: Iterable[GoldenExample | Mapping[str, Any]]) -> list[GoldenExample]:
    out = []
    for i, ex in enumerate(examples):
        if isinstance(ex, GoldenExample):
            out.append(ex)
            continue
        d = dict(ex)
        given_id = d.pop("id", None)
        try:
            out.append(example_from_dict(d, id=str(given_id) if given_id is not None else None))
        except ValidationError as exc:
            raise ValidationError(f"example {i}: {exc.message}", index=i) from None
    if not out:
        raise ValidationError("no examples to evaluate")
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        raise ValidationError("example ids are not unique (duplicate cases in the golden set?)")
    return out


@contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda k: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def _generate(backend: Any, batch: Sequence[GoldenExample], params: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    convs = [ex.conversation() for ex in batch]
    try:
        return [(c.text, None) for c in backend.chat_batch(convs, **params)]
    except Exception:  # noqa: BLE001 - find which examples fail instead of losing the batch
        pass
    out: list[tuple[str, str | None]] = []
    for conv in convs:
        try:
            out.append((backend.chat(conv, **params).text, None))
        except Exception as exc:  # noqa: BLE001 - a failed answer is a failed example, recorded
            out.append(("", f"{type(exc).__name__}: {exc}"))
    return out


def _check_all(examples: Sequence[GoldenExample], answers: Sequence[tuple[str, str | None]],
               judge: Any, champion_outputs: Mapping[str, str]) -> list[ExampleResult]:
    verdicts: dict[int, CheckResult] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (ex, (_text, error)) in enumerate(zip(examples, answers)):
        if error is not None:
            verdicts[i] = CheckResult(False, 0.0, "backend error")
        else:
            groups[ex.checker].append(i)
    for name, idx in groups.items():
        items = [(answers[i][0], examples[i].expected, examples[i].checker_args,
                  CheckContext(messages=examples[i].conversation(), judge=judge,
                               champion_output=champion_outputs.get(examples[i].id))) for i in idx]
        for i, verdict in zip(idx, get_checker(name).check_batch(items)):
            verdicts[i] = verdict
    return [ExampleResult(ex.id, text, verdicts[i].passed, float(verdicts[i].score), ex.tags, ex.checker,
                          verdicts[i].detail, error)
            for i, (ex, (text, error)) in enumerate(zip(examples, answers))]


def _preflight(examples: Sequence[GoldenExample], judge: Any, champion_outputs: Mapping[str, str]) -> None:
    # Fail before the first (slow) model call, not after it.
    for ex in examples:
        checker = get_checker(ex.checker)
        if checker.needs_judge and judge is None:
            raise ValidationError(f"example {ex.id} uses the {ex.checker!r} checker: pass judge=<backend>")
        if ex.checker == "pairwise" and ex.id not in champion_outputs:
            raise ValidationError(f"example {ex.id} uses the 'pairwise' checker: pass champion=<EvalResult>")


def evaluate(backend: Any, examples: Iterable[GoldenExample | Mapping[str, Any]], *, batch_size: int = 8,
             progress: bool = True, params: Mapping[str, Any] | None = None, judge: Any = None,
             champion: EvalResult | Mapping[str, str] | None = None, model: str | None = None) -> EvalResult:
    """Answer every example with ``backend.chat_batch`` (in batches), check each answer.

    ``judge``: the backend for the ``judge``/``pairwise`` checkers; ``champion``: the
    champion's EvalResult (or answers by example id) for ``pairwise``. A backend error on
    an example fails that example; if every example fails so, UpstreamError is raised.
    """
    if batch_size < 1:
        raise ValidationError("batch_size must be at least 1")
    exs = _coerce(examples)
    champion_outputs = champion.outputs() if isinstance(champion, EvalResult) else dict(champion or {})
    _preflight(exs, judge, champion_outputs)
    call_params = DEFAULT_PARAMS | dict(params or {})
    name = model or getattr(backend, "name", "") or ""
    start = time.perf_counter()
    answers: list[tuple[str, str | None]] = []
    with _progress_bar(progress, len(exs), f"eval {name}".strip()) as advance:
        for i in range(0, len(exs), batch_size):
            batch = exs[i:i + batch_size]
            answers.extend(_generate(backend, batch, call_params))
            # Nothing answered yet and a whole batch failed: the backend is down, stop here
            # instead of paying its timeouts and retries once per remaining example.
            if all(err is not None for _t, err in answers):
                raise UpstreamError(f"the model failed on every example: {answers[0][1]}", model=name)
            advance(len(batch))
    results = _check_all(exs, answers, judge, champion_outputs)
    return summarize(results, elapsed_s=time.perf_counter() - start, model=name)


# --- eval_runs ---------------------------------------------------------------------------

def record_eval_run(db: Any, version_id: str, result: EvalResult, *, baseline: str | None = None,
                    golden_set: str | None = None, golden_version: int | None = None, gate: Any = None) -> str:
    """Store ``result`` in eval_runs (with the gate decision when given); returns the run id."""
    d = result.to_dict()
    metrics = {k: d[k] for k in ("mean_score", "examples_per_s", "elapsed_s", "errors", "model", "per_tag")}
    gate_d = gate.to_dict() if gate is not None else None
    run_id = new_id()
    with db.begin() as conn:
        conn.execute(schema.eval_runs.insert().values(
            id=run_id, version_id=version_id, baseline_id=baseline, golden_set=golden_set,
            golden_version=golden_version, n=result.n, pass_rate=result.pass_rate, metrics=metrics,
            results=d["results"], gate=gate_d, passed=None if gate is None else bool(gate.passed),
            created_at=now()))
    return run_id


def _result_of(row: Mapping[str, Any]) -> EvalResult:
    m = row.get("metrics") or {}
    return EvalResult.from_dict({"n": row["n"], "pass_rate": row["pass_rate"] or 0.0,
                                 "results": row.get("results") or [], **m})


def load_eval_run(db: Any, run_id: str) -> EvalResult:
    """The EvalResult stored under ``run_id``."""
    row = db.fetch_one(sa.select(schema.eval_runs).where(schema.eval_runs.c.id == run_id))
    if row is None:
        raise NotFoundError(f"eval run {run_id!r} not found")
    return _result_of(row)


def latest_eval_run(db: Any, version_id: str, *, golden_set: str | None = None,
                    golden_version: int | None = None) -> tuple[str, EvalResult] | None:
    """The newest stored run of ``version_id`` (on that golden set/version when given)."""
    er = schema.eval_runs
    stmt = sa.select(er).where(er.c.version_id == version_id)
    if golden_set is not None:
        stmt = stmt.where(er.c.golden_set == golden_set)
    if golden_version is not None:
        stmt = stmt.where(er.c.golden_version == golden_version)
    row = db.fetch_one(stmt.order_by(er.c.created_at.desc(), er.c.id.desc()).limit(1))
    return None if row is None else (row["id"], _result_of(row))
