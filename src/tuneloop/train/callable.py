"""The ``callable`` trainer: seed 002's ``train_fn(data_path) -> {"model_path", "metrics"}``.

The function may also accept ``output_dir``, ``base_model`` and ``config`` keyword arguments;
it gets those it names. Its answer needs ``model_path`` (or ``adapter_path``); ``metrics`` is a
dict, and any other numeric keys (seed 002's ``{"loss": 0.25, "accuracy": 0.85, ...}``) are
metrics too. A function importable by name (``"pkg.module:train"`` or a module-level
function) runs in the training subprocess; a closure or lambda runs in this process.

>>> def train_model(data_path):
...     return {"model_path": "model.pth", "metrics": {"loss": 0.25}}
>>> CallableTrainer(train_model).method
'callable'
"""
from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, TrainingError
from tuneloop.train.base import ProgressFn, TrainResult

TrainFn = Callable[..., dict[str, Any]]


def import_ref(ref: str) -> TrainFn:
    """``"package.module:function"`` -> the function."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"a train function reference looks like 'package.module:function', not {ref!r}")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import train function {ref!r}: {exc}") from exc
    if not callable(obj):
        raise ConfigError(f"{ref!r} is not callable")
    return obj


def ref_of(fn: TrainFn) -> str | None:
    """The import reference of a module-level function, or None (closures, lambdas, ``__main__``)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if import_ref(f"{module}:{qualname}") is fn else None
    except ConfigError:
        return None


def result_from_answer(answer: Any, output_dir: str) -> TrainResult:
    """Turn a train_fn's dict into a :class:`TrainResult` (relative paths are taken from the cwd)."""
    if not isinstance(answer, dict):
        raise TrainingError(f"train_fn must return a dict with 'model_path', not {type(answer).__name__}")
    model, adapter = answer.get("model_path"), answer.get("adapter_path")
    if not model and not adapter:
        raise TrainingError(f"train_fn returned no 'model_path' (keys: {sorted(answer)})")
    metrics = dict(answer.get("metrics") or {})
    metrics.update({k: v for k, v in answer.items()
                    if k not in ("model_path", "adapter_path", "metrics") and isinstance(v, int | float)})
    return TrainResult(adapter_path=str(Path(adapter).resolve()) if adapter else None,
                       model_path=str(Path(model).resolve()) if model else None,
                       metrics=metrics, output_dir=output_dir)


class CallableTrainer:
    """Wrap a Python training function as a trainer."""

    def __init__(self, fn: TrainFn | str, *, name: str = "callable", method: str = "callable") -> None:
        if isinstance(fn, str):
            if ":" not in fn:
                raise ConfigError(f"a train function reference looks like 'package.module:function', not {fn!r}")
            # Imported when training starts: the module may only be importable in the worker's path.
            self._fn, self.ref = None, fn
        elif callable(fn):
            self._fn, self.ref = fn, ref_of(fn)
        else:
            raise ConfigError("CallableTrainer needs a function or a 'module:function' reference")
        self.name, self.method = name, method

    @property
    def fn(self) -> TrainFn:
        if self._fn is None:
            self._fn = import_ref(self.ref)
        return self._fn

    def subprocess_spec(self) -> dict[str, Any] | None:
        return {"kind": "callable", "ref": self.ref, "name": self.name} if self.ref else None

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        out = Path(output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        offered = {"output_dir": str(out), "base_model": base_model, "config": config}
        try:
            params = inspect.signature(self.fn).parameters
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
            kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
        except (TypeError, ValueError):  # builtins without a signature
            kwargs = {}
        answer = self.fn(str(dataset_path), **kwargs)
        return result_from_answer(answer, str(out))


__all__ = ["CallableTrainer", "import_ref", "ref_of", "result_from_answer"]
