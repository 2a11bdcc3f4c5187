"""One settings object for the whole system: a file (TOML, YAML or JSON) plus ``TUNELOOP_*``
environment overrides.

>>> s = load_settings(env={"TUNELOOP_PORT": "9000"})
>>> s.port
9000

Precedence, lowest first: defaults, the file (``path`` or ``$TUNELOOP_CONFIG``), the
environment. Environment names are ``TUNELOOP_`` + the field name in capitals; a double
underscore reaches into a section, e.g. ``TUNELOOP_AB_TEST_CONFIG__INITIAL_CHALLENGER_TRAFFIC=0.2``.
Values in sections are parsed as JSON where they parse (``0.2``, ``true``, ``[1, 2]``) and
kept as text otherwise.

Seed 002's JSON configuration file loads as is. Unknown keys and bad values raise
:class:`tuneloop.errors.ConfigError` naming the key and where it came from.

The sections ``trigger_config``, ``generator_config``, ``ab_test_config`` and ``loop`` stay
plain dicts here: the packages that own those concepts (loop, datasets, experiments) turn
them into their config dataclasses and validate them there.
"""
from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "TUNELOOP_"
_MiB = 1024 * 1024


class Settings(BaseModel):
    """Every setting of a tuneloop deployment, validated in one place.

    >>> Settings(port=8080).database_url().startswith("sqlite:///")
    True
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    db_url: str | None = Field(None, description="SQLAlchemy URL; None means SQLite at db_path.")
    db_path: str = Field("./.tuneloop/tuneloop.db", description="SQLite file used when db_url is None.")
    data_dir: str = Field("./.tuneloop", description="Where tuneloop keeps its files.")
    host: str = Field("127.0.0.1", description="Address `tuneloop serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `tuneloop serve` binds (0: any free port).")
    insecure_dev: bool = Field(False, description="Turn API-key checks off (development only).")
    max_body_bytes: int = Field(10 * _MiB, gt=0, description="Largest accepted request body; larger gets 413.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    check_interval_seconds: float = Field(3600.0, gt=0, description="How often the loop checks its triggers.")
    pii_mode: Literal["off", "redact", "hash"] = Field("off", description="PII at ingestion: keep, redact, or keyed hash.")
    pii_hash_key: pydantic.SecretStr | None = Field(None, description="Key of the PII hash (pii_mode=hash).")
    retention_days: float | None = Field(None, gt=0, description="Delete interactions older than this (the loop enforces it).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (empty: CORS off).")
    rate_limit_per_s: float | None = Field(None, gt=0, description="Requests per second per API key (None: no limit).")
    rate_limit_burst: int | None = Field(None, gt=0, description="Burst size of the per-key rate limit.")
    output_dir: str = Field("./.tuneloop/runs", description="Where training data and runs are written.")
    enable_ab_testing: bool = True
    enable_auto_promotion: bool = True
    trigger_config: dict[str, Any] = Field(default_factory=dict, description="Fields of loop.TriggerConfig.")
    generator_config: dict[str, Any] = Field(default_factory=dict, description="Fields of DataGeneratorConfig.")
    ab_test_config: dict[str, Any] = Field(default_factory=dict, description="Fields of ABTestConfig.")
    loop: dict[str, Any] = Field(default_factory=dict, description="Fields of LoopConfig.")

    def database_url(self) -> str:
        """The URL to open: ``db_url``, or SQLite at ``db_path`` (its folder is created)."""
        from tuneloop.store.db import resolve_url

        return resolve_url(self.db_url) if self.db_url else resolve_url(path=self.db_path)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist", file=str(path))
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            raise ConfigError(f"config file {str(path)!r}: unknown format {suffix!r} "
                              "(use .toml, .yaml, .yml or .json)", file=str(path))
    except ConfigError:
        raise
    except Exception as exc:  # parse errors of any of the three formats
        raise ConfigError(f"config file {str(path)!r} cannot be parsed: {exc}", file=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings, "
                          f"not {type(data).__name__}", file=str(path))
    return data


def _env_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from ``TUNELOOP_*`` variables, and where each key came from.

    Variables that name no setting are left alone: other tools share the prefix
    (``TUNELOOP_TEST_DB``, ``TUNELOOP_API_KEY`` of the SDK, ...).
    """
    fields = Settings.model_fields
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        top, _, rest = name[len(ENV_PREFIX):].lower().partition("__")
        if top not in fields or top == "config":
            continue
        if rest:
            section = data.setdefault(top, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{name}: {top!r} is not a section", key=top, source=name)
            keys = rest.split("__")
            for key in keys[:-1]:
                section = section.setdefault(key, {})
            section[keys[-1]] = _env_value(raw)
            origin[".".join([top, *keys])] = f"environment variable {name}"
        else:
            is_section = fields[top].annotation is dict[str, Any]
            data[top] = _env_value(raw) if is_section else raw
            origin[top] = f"environment variable {name}"
    return data, origin


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: pydantic.ValidationError, file: str | None, origin: dict[str, str]) -> ConfigError:
    problems, keys = [], []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        source = next((v for k, v in origin.items() if key == k or key.startswith(k + ".")), None)
        where = source or (f"file {file!r}" if file else "defaults")
        what = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
        problems.append(f"{key}: {what} (got {e.get('input')!r}, from {where})")
        keys.append(key)
    message = "invalid configuration: " + "; ".join(problems)
    return ConfigError(message, keys=keys, file=file)


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Read settings from ``path`` (or ``$TUNELOOP_CONFIG``), then ``env``, then ``overrides``.

    ``overrides`` are explicit values (from CLI flags); ``None`` values are ignored.

    >>> load_settings(env={}, port=9001).port
    9001
    """
    env = os.environ if env is None else env
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    file = str(path) if path else None
    data = _read_file(Path(os.path.expanduser(str(path)))) if path else {}
    env_data, origin = _env_overrides(env)
    data = _merge(data, env_data)
    explicit = {k: v for k, v in overrides.items() if v is not None}
    origin.update({key: "an explicit argument" for key in explicit})
    data = _merge(data, explicit)
    try:
        return Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _describe(exc, file, origin) from None
