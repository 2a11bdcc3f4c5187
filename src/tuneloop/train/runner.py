"""Run a trainer in a subprocess and record the run in ``train_runs``.

    pending -> running -> succeeded | failed

The child is ``python -m tuneloop.train.worker --spec <output_dir>/spec.json``. Its output
goes to ``<output_dir>/train.log``; its progress events drive a progress bar here and, every
few seconds, ``train_runs.metrics = {"progress": {step, total, loss}}`` for dashboards. A crash
(non-zero exit, a signal, a timeout, no model on disk) is recorded as ``failed`` with the
reason and the log's tail, and raises :class:`~tuneloop.errors.TrainingError`: a failed run
never returns a model.

>>> runner = TrainingRunner(db)                                        # doctest: +SKIP
>>> result = runner.run(TRLTrainer(TRLConfig(max_steps=30)), "sft.jsonl", "runs/r1", "smollm2")  # doctest: +SKIP
>>> result.adapter_path, result.metrics["train_loss_last"]           # doctest: +SKIP
('/.../runs/r1/adapter', 0.41)
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import TrainingError, TuneloopError
from tuneloop.ids import new_id, now
from tuneloop.train.base import EVENT_PREFIX, Trainer, TrainResult, config_to_dict


def jsonable(value: Any) -> Any:
    """Metrics as JSON both databases accept: NaN/inf become None (PostgreSQL's JSON rejects NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


class _Bar:
    """A tqdm step bar fed by progress events (quiet when ``show`` is False)."""

    def __init__(self, show: bool, desc: str, on_progress: Any = None) -> None:
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, desc=desc, unit="step", dynamic_ncols=True)
        self.last_log: dict[str, Any] = {}
        self.on_progress = on_progress  # called with (step, total, last loss)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and self.on_progress is not None:
            self.on_progress(event.get("step"), event.get("total"), self.last_log.get("loss"))
        if event.get("event") == "log":
            self.last_log = event
            if self.bar is not None and "loss" in event:
                self.bar.set_postfix(loss=f"{event['loss']:.4f}", refresh=False)
        elif event.get("event") == "progress" and self.bar is not None:
            if event.get("total") and self.bar.total != event["total"]:
                self.bar.total = event["total"]
            self.bar.n = int(event.get("step") or 0)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrainingRunner:
    """Runs trainers in a subprocess; records status, metrics, log path and errors in ``train_runs``."""

    def __init__(self, db=None, *, python: str = sys.executable, timeout_s: float | None = None,
                 show_progress: bool = True, num_threads: int | None = None, env: dict[str, str] | None = None,
                 log_tail_lines: int = 30) -> None:
        self.db, self.python, self.timeout_s = db, python, timeout_s
        self.show_progress, self.num_threads = show_progress, num_threads
        self.env, self.log_tail_lines = dict(env or {}), log_tail_lines

    # -- train_runs bookkeeping --------------------------------------------------------------
    def _record(self, run_id: str, **values: Any) -> None:
        if self.db is None:
            return
        from tuneloop.store import schema

        with self.db.begin() as conn:
            conn.execute(sa.update(schema.train_runs).where(schema.train_runs.c.id == run_id).values(**values))

    def _create(self, run_id: str, trainer: Trainer, base_model: str | None, config: dict[str, Any],
                dataset_id: str | None, output_dir: Path, log_path: Path) -> None:
        if self.db is None:
            return
        from tuneloop.store import schema

        with self.db.begin() as conn:
            conn.execute(schema.train_runs.insert().values(
                id=run_id, dataset_id=dataset_id, backend=trainer.name, method=trainer.method,
                base_model=str(base_model) if base_model else None, config=config, status="pending",
                output_dir=str(output_dir), log_path=str(log_path)))

    def _fail(self, run_id: str, message: str, log_path: Path) -> TrainingError:
        self._record(run_id, status="failed", error=message, ended_at=now())
        return TrainingError(message, run_id=run_id, log_path=str(log_path))

    # -- running -----------------------------------------------------------------------------
    def run(self, trainer: Trainer, dataset_path: str | os.PathLike, output_dir: str | os.PathLike,
            base_model: str | None = None, config: Any = None, *, dataset_id: str | None = None,
            run_id: str | None = None) -> TrainResult:
        """Train, record the run, return the result (or raise :class:`TrainingError`)."""
        run_id = run_id or new_id()
        out = Path(output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "train.log"
        cfg = config_to_dict(config if config is not None else getattr(trainer, "config", None))
        self._create(run_id, trainer, base_model, cfg, dataset_id, out, log_path)
        spec = trainer.subprocess_spec()
        self._record(run_id, status="running", started_at=now())
        try:
            if spec is None:
                result = self._run_inprocess(trainer, dataset_path, out, base_model, cfg or config, log_path)
            else:
                result = self._run_subprocess(spec, dataset_path, out, base_model, cfg, log_path, trainer, run_id)
            result.require_artifact()
        except TrainingError as exc:
            raise self._fail(run_id, exc.message, log_path) from exc
        except KeyboardInterrupt:
            self._record(run_id, status="failed", error="interrupted", ended_at=now())
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is a failed run, never a model
            raise self._fail(run_id, f"{type(exc).__name__}: {exc}", log_path) from exc
        result = TrainResult(adapter_path=result.adapter_path, model_path=result.model_path,
                             metrics=result.metrics, log_path=str(log_path), output_dir=str(out), run_id=run_id,
                             prompt_path=result.prompt_path)
        self._record(run_id, status="succeeded", metrics=jsonable(result.metrics), ended_at=now())
        return result

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1"}
        # The child must import the same tuneloop as this process, wherever it was imported from.
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        return env

    def _progress_recorder(self, run_id: str, every_s: float = 5.0):
        """Write ``{"progress": {step, total, loss}}`` into the run's metrics at most every ``every_s``."""
        last = [0.0]

        def record(step: Any, total: Any, loss: Any) -> None:
            t = time.monotonic()
            if self.db is None or (t - last[0] < every_s and step != total):
                return
            last[0] = t
            try:
                self._record(run_id, metrics={"progress": {"step": step, "total": total, "loss": loss}})
            except Exception:  # noqa: BLE001 - progress is best effort; the final write is not
                pass

        return record

    def _run_subprocess(self, trainer_spec: dict[str, Any], dataset_path, out: Path, base_model, cfg: dict,
                        log_path: Path, trainer: Trainer, run_id: str) -> TrainResult:
        result_path = out / "result.json"
        result_path.unlink(missing_ok=True)
        spec = {"trainer": trainer_spec, "dataset_path": str(Path(dataset_path).expanduser().resolve()),
                "output_dir": str(out), "base_model": base_model, "config": cfg,
                "result_path": str(result_path), "num_threads": self.num_threads}
        spec_path = out / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2, default=str))
        cmd = [self.python, "-m", "tuneloop.train.worker", "--spec", str(spec_path)]
        bar = _Bar(self.show_progress, f"train {trainer.name}:{trainer.method}", self._progress_recorder(run_id))
        tail: deque[str] = deque(maxlen=self.log_tail_lines)
        started = time.monotonic()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    env=self._child_env(), start_new_session=True, errors="replace")
            timed_out = threading.Event()
            timer = self._start_timer(proc, timed_out)
            try:
                self._pump(proc, log, bar, tail)
                rc = proc.wait()
            except BaseException:
                self._kill(proc)
                raise
            finally:
                bar.close()
                if timer:
                    timer.cancel()
        return self._read_result(rc, result_path, tail, timed_out.is_set(), time.monotonic() - started)

    @staticmethod
    def _pump(proc: subprocess.Popen, log, bar: _Bar, tail: deque) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                try:
                    bar(json.loads(line[len(EVENT_PREFIX):]))
                except ValueError:
                    pass
                continue
            log.write(line)
            log.flush()
            if line.strip():
                tail.append(line.rstrip()[-400:])

    def _start_timer(self, proc: subprocess.Popen, flag: threading.Event) -> threading.Timer | None:
        if not self.timeout_s:
            return None

        def expire() -> None:
            flag.set()
            self._kill(proc)

        timer = threading.Timer(self.timeout_s, expire)
        timer.daemon = True
        timer.start()
        return timer

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """Kill the worker and anything it started (its own session / process group)."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _read_result(self, rc: int, result_path: Path, tail: deque, timed_out: bool, seconds: float) -> TrainResult:
        data: dict[str, Any] = {}
        if result_path.exists():
            try:
                data = json.loads(result_path.read_text())
            except ValueError:
                data = {}
        log_tail = "\n".join(list(tail)[-10:])
        if timed_out:
            raise TrainingError(f"training timed out after {self.timeout_s:.0f}s and was killed\n{log_tail}")
        if rc != 0:
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            reason = data.get("error") or "no result written"
            raise TrainingError(f"training process {how}: {reason}\n{log_tail}".rstrip())
        if not data.get("ok"):
            raise TrainingError(f"training process exited without a result\n{log_tail}".rstrip())
        result = TrainResult.from_dict(data["result"])
        metrics = {**result.metrics, "wall_seconds": round(seconds, 3)}
        return TrainResult(adapter_path=result.adapter_path, model_path=result.model_path, metrics=metrics,
                           prompt_path=result.prompt_path)

    def _run_inprocess(self, trainer: Trainer, dataset_path, out: Path, base_model, config, log_path: Path):
        """For trainers a subprocess cannot rebuild (closures, lambdas): same bookkeeping, this process."""
        bar = _Bar(self.show_progress, f"train {trainer.name}:{trainer.method}")
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"in-process {trainer.name}:{trainer.method}\n")
            try:
                return trainer.train(str(dataset_path), str(out), base_model, config, progress=bar)
            except TuneloopError:
                log.write(traceback.format_exc())
                raise
            except Exception as exc:  # noqa: BLE001 - the user's train_fn may raise anything
                log.write(traceback.format_exc())
                raise TrainingError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                bar.close()


__all__ = ["TrainingRunner"]
