"""JSON Schema validation for the ``json_schema`` checker.

Uses the ``jsonschema`` package when it is installed (full draft 2020-12 support); otherwise
a small validator that covers what golden sets use: type, enum, const, properties,
required, additionalProperties, items, min/maxItems, min/maxLength, pattern,
minimum/maximum (and exclusive), anyOf, oneOf, allOf, not.

>>> schema_errors({"city": 3}, {"type": "object", "properties": {"city": {"type": "string"}}}, engine="lite")
['$.city: 3 is not of type string']
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tuneloop.errors import ValidationError

__all__ = ["schema_errors", "validate_schema_definition", "HAVE_JSONSCHEMA"]

try:  # optional: the SDK does not pull jsonschema
    import jsonschema as _jsonschema
    HAVE_JSONSCHEMA = True
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema = None
    HAVE_JSONSCHEMA = False

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_KNOWN = {"type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
          "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
          "exclusiveMaximum", "anyOf", "oneOf", "allOf", "not", "$schema", "$id", "title", "description",
          "default", "examples"}


def _engine(engine: str) -> str:
    if engine == "auto":
        return "jsonschema" if HAVE_JSONSCHEMA else "lite"
    if engine == "jsonschema" and not HAVE_JSONSCHEMA:
        raise ValidationError("the jsonschema package is not installed (pip install jsonschema)")
    if engine not in ("jsonschema", "lite"):
        raise ValidationError(f"unknown JSON schema engine {engine!r} (auto, jsonschema, lite)")
    return engine


def validate_schema_definition(schema: Any, *, engine: str = "auto") -> None:
    """Raise ValidationError if ``schema`` is not a usable JSON Schema."""
    if not isinstance(schema, Mapping):
        raise ValidationError(f"JSON schema must be an object, got {type(schema).__name__}")
    if _engine(engine) == "jsonschema":
        try:
            _jsonschema.validators.validator_for(schema).check_schema(schema)
        except _jsonschema.SchemaError as exc:
            raise ValidationError(f"bad JSON schema: {exc.message}") from None
        return
    _check_lite_schema(schema, "$")


def _check_lite_schema(schema: Mapping, where: str) -> None:
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValidationError(f"bad JSON schema at {where}: unsupported keywords {sorted(unknown)} "
                              "(pip install jsonschema for the full standard)")
    types = schema.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t not in _TYPES:
            raise ValidationError(f"bad JSON schema at {where}: unknown type {t!r}")
    for key, sub in (schema.get("properties") or {}).items():
        _check_lite_schema(sub, f"{where}.{key}")
    for key in ("items", "not"):
        if isinstance(schema.get(key), Mapping):
            _check_lite_schema(schema[key], f"{where}.{key}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            _check_lite_schema(sub, f"{where}.{key}[{i}]")


def schema_errors(value: Any, schema: Mapping, *, engine: str = "auto") -> list[str]:
    """Messages for every way ``value`` breaks ``schema`` (empty list = valid)."""
    if _engine(engine) == "jsonschema":
        validator = _jsonschema.validators.validator_for(schema)(schema)
        return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(value)]
    errors: list[str] = []
    _lite(value, schema, "$", errors)
    return errors


def _lite(v: Any, s: Mapping, path: str, errors: list[str]) -> None:
    # Each keyword adds its own message; the composite keywords recurse into copies.
    types = s.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](v) for t in names):
            errors.append(f"{path}: {v!r} is not of type {' or '.join(names)}")
            return
    if "enum" in s and v not in s["enum"]:
        errors.append(f"{path}: {v!r} is not one of {s['enum']!r}")
    if "const" in s and v != s["const"]:
        errors.append(f"{path}: {v!r} is not {s['const']!r}")
    if isinstance(v, dict):
        _lite_object(v, s, path, errors)
    elif isinstance(v, list):
        _lite_array(v, s, path, errors)
    elif isinstance(v, str):
        _lite_string(v, s, path, errors)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        _lite_number(v, s, path, errors)
    _lite_composite(v, s, path, errors)


def _lite_object(v: dict, s: Mapping, path: str, errors: list[str]) -> None:
    props = s.get("properties") or {}
    for key in s.get("required", []):
        if key not in v:
            errors.append(f"{path}: {key!r} is a required property")
    for key, item in v.items():
        if key in props:
            _lite(item, props[key], f"{path}.{key}", errors)
        elif s.get("additionalProperties") is False:
            errors.append(f"{path}: additional property {key!r} is not allowed")
        elif isinstance(s.get("additionalProperties"), Mapping):
            _lite(item, s["additionalProperties"], f"{path}.{key}", errors)


def _lite_array(v: list, s: Mapping, path: str, errors: list[str]) -> None:
    if "minItems" in s and len(v) < s["minItems"]:
        errors.append(f"{path}: {len(v)} items, fewer than {s['minItems']}")
    if "maxItems" in s and len(v) > s["maxItems"]:
        errors.append(f"{path}: {len(v)} items, more than {s['maxItems']}")
    if isinstance(s.get("items"), Mapping):
        for i, item in enumerate(v):
            _lite(item, s["items"], f"{path}[{i}]", errors)


def _lite_string(v: str, s: Mapping, path: str, errors: list[str]) -> None:
    if "minLength" in s and len(v) < s["minLength"]:
        errors.append(f"{path}: {v!r} is shorter than {s['minLength']}")
    if "maxLength" in s and len(v) > s["maxLength"]:
        errors.append(f"{path}: {v!r} is longer than {s['maxLength']}")
    if "pattern" in s and not re.search(s["pattern"], v):
        errors.append(f"{path}: {v!r} does not match {s['pattern']!r}")


def _lite_number(v: float, s: Mapping, path: str, errors: list[str]) -> None:
    checks = (("minimum", lambda b: v < b, "less than"), ("maximum", lambda b: v > b, "greater than"),
              ("exclusiveMinimum", lambda b: v <= b, "less than or equal to"),
              ("exclusiveMaximum", lambda b: v >= b, "greater than or equal to"))
    for key, bad, words in checks:
        if key in s and bad(s[key]):
            errors.append(f"{path}: {v!r} is {words} the {key} of {s[key]!r}")


def _lite_composite(v: Any, s: Mapping, path: str, errors: list[str]) -> None:
    def ok(sub: Mapping) -> bool:
        found: list[str] = []
        _lite(v, sub, path, found)
        return not found

    if "allOf" in s:
        for sub in s["allOf"]:
            _lite(v, sub, path, errors)
    if "anyOf" in s and not any(ok(sub) for sub in s["anyOf"]):
        errors.append(f"{path}: {v!r} is not valid under any of the given schemas")
    if "oneOf" in s and sum(ok(sub) for sub in s["oneOf"]) != 1:
        errors.append(f"{path}: {v!r} is not valid under exactly one of the given schemas")
    if "not" in s and ok(s["not"]):
        errors.append(f"{path}: {v!r} should not be valid under {s['not']!r}")
