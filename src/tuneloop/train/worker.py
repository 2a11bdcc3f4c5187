"""The training subprocess: ``python -m tuneloop.train.worker --spec spec.json``.

The spec names the trainer (``{"kind": "trl" | "retriever" | "command" | "callable", ...}``), the data,
the base model, the output folder and where to write the result. Progress and log lines go
to stdout as ``@@tuneloop {json}`` events for :class:`tuneloop.train.runner.TrainingRunner`;
the result (or the error) is written to ``result_path`` before a zero (or non-zero) exit.
"""
from __future__ import annotations

import argparse
import json
import os
import traceback
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError
from tuneloop.train.base import Trainer, emit_event


def trainer_from_spec(spec: dict[str, Any]) -> Trainer:
    """Rebuild the trainer a runner described with ``trainer.subprocess_spec()``."""
    kind = spec.get("kind")
    if kind == "trl":
        from tuneloop.train.trl_trainer import TRLTrainer

        return TRLTrainer(spec.get("config") or {})
    if kind == "command":
        from tuneloop.train.command import CommandTrainer

        return CommandTrainer.from_spec(spec)
    if kind == "retriever":
        from tuneloop.train.retriever import RetrieverTrainer

        return RetrieverTrainer(spec.get("config") or {})
    if kind == "callable":
        from tuneloop.train.callable import CallableTrainer

        return CallableTrainer(spec["ref"], name=spec.get("name", "callable"))
    raise ConfigError(f"unknown trainer kind {kind!r} in the worker spec")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str, indent=2))
    os.replace(tmp, path)


def run_spec(spec: dict[str, Any]) -> int:
    result_path = Path(spec["result_path"])
    try:
        if spec.get("num_threads"):
            import torch

            torch.set_num_threads(int(spec["num_threads"]))
        trainer = trainer_from_spec(spec["trainer"])
        emit_event({"event": "start", "trainer": trainer.name, "method": trainer.method})
        result = trainer.train(spec["dataset_path"], spec["output_dir"], spec.get("base_model"),
                               spec.get("config"), progress=emit_event)
        _write_json(result_path, {"ok": True, "result": result.to_dict()})
        emit_event({"event": "done"})
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the runner, then we exit 1
        traceback.print_exc()
        _write_json(result_path, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    ap = argparse.ArgumentParser(description="tuneloop training worker")
    ap.add_argument("--spec", required=True, help="path of the JSON spec written by the runner")
    ns = ap.parse_args(argv)
    return run_spec(json.loads(Path(ns.spec).read_text()))


if __name__ == "__main__":
    raise SystemExit(main())
