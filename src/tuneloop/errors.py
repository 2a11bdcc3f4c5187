"""The tuneloop exception hierarchy.

    TuneloopError
     ├── ConfigError            a setting is unknown or has a bad value
     ├── StoreError             the database cannot be opened, migrated or written
     ├── ValidationError        input that names its bad field (HTTP 422)
     ├── NotFoundError          an id that does not exist (HTTP 404)
     ├── AuthError              no key or a bad key (HTTP 401)
     │    └── ForbiddenError    a valid key without the needed scope (HTTP 403)
     ├── ConflictError          state does not allow the action (HTTP 409)
     ├── UpstreamError          a model backend failed (HTTP 502)
     │    └── UpstreamTimeout   a model backend timed out (HTTP 504)
     ├── TrainingError          a training run failed; nothing was registered
     ├── DatasetError           a dataset cannot be built or exported
     └── GateError              an offline gate failed: carries metric, value, threshold

The capture SDK never raises these into the host application: it counts and logs.
HTTP-facing errors carry ``status``; the server renders them with one handler.
"""
from __future__ import annotations


class TuneloopError(Exception):
    status: int = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, **{k: v for k, v in self.details.items()}}


class ConfigError(TuneloopError):
    status = 400


class StoreError(TuneloopError):
    status = 503


class ValidationError(TuneloopError):
    status = 422


class NotFoundError(TuneloopError):
    status = 404


class AuthError(TuneloopError):
    status = 401


class ForbiddenError(AuthError):
    status = 403


class ConflictError(TuneloopError):
    status = 409


class UpstreamError(TuneloopError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class TrainingError(TuneloopError):
    status = 500


class DatasetError(TuneloopError):
    status = 400


class GateError(TuneloopError):
    """An offline gate failed. ``metric``, ``value`` and ``threshold`` say why."""

    status = 409

    def __init__(self, metric: str, value: float, threshold: float, message: str | None = None) -> None:
        super().__init__(message or f"gate failed: {metric}={value:.4f} below threshold {threshold:.4f}",
                         metric=metric, value=value, threshold=threshold)
        self.metric, self.value, self.threshold = metric, value, threshold
