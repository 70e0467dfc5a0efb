"""Load, default-fill and validate the workflow config.

:func:`validate_config` is what the Snakefile calls on the config Snakemake
loaded; it raises :class:`ConfigError` with one message naming the key, the value
and what is allowed, before any job starts.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from diffxai.config.checks import semantic_errors

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


class ConfigError(ValueError):
    """An invalid config value; the message names key, value and what is allowed."""


def load_schema() -> dict[str, Any]:
    """The config schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema())


@functools.cache
def _parsed_schema() -> dict[str, Any]:
    """The schema parsed once per process with libyaml's loader where PyYAML has it: every
    snakemake start (each SLURM job's included) validates the config, and the pure-Python
    parser took ≈ 0.3 s per parse."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values of missing properties first, then puts
    an object's keys in the schema's order (names the schema does not list, such as datasets
    and methods, after them in the order written). Snakemake compares a job's params by their
    ``repr``, which follows key order: keys written in another order, or a default written
    out, would otherwise re-run the job."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "$ref" in subschema and "default" not in subschema:
                    subschema = validator._resolver.lookup(subschema["$ref"]).contents
                if name not in instance and isinstance(subschema, dict) and "default" in subschema:
                    instance[name] = copy.deepcopy(subschema["default"])
            order = [name for name in properties if name in instance]
            order += [name for name in instance if name not in properties]
            ordered = {name: instance[name] for name in order}
            instance.clear()
            instance.update(ordered)
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": fill_then_check})


DefaultFillingValidator = _with_defaults(Draft202012Validator)


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _allowed(error: ValidationError) -> str:
    """What the schema allows at the failing key, in words."""
    schema, kind = error.schema, error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return f"allowed keys: {', '.join(allowed)}" if allowed else "no keys allowed"
    if kind == "enum":
        return "allowed: " + ", ".join(map(repr, error.validator_value))
    if kind == "const":
        return f"allowed: {error.validator_value!r}"
    if kind == "not" and "const" in error.validator_value:
        return f"allowed: anything but {error.validator_value['const']!r}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"allowed: a number {sign} {error.validator_value}"
    if kind == "type":
        return f"allowed type: {error.validator_value}"
    if kind in ("minItems", "maxItems", "minProperties", "minLength"):
        bound = "at least" if kind.startswith("min") else "at most"
        unit = {"minItems": "items", "maxItems": "items", "minProperties": "keys", "minLength": "characters"}
        return f"allowed: {bound} {error.validator_value} {unit[kind]}"
    if kind == "pattern":
        return f"allowed: strings matching {error.validator_value}"
    if kind == "required":
        return "required keys: " + ", ".join(error.validator_value)
    if kind in ("oneOf", "anyOf"):
        return "allowed: " + " or ".join(_alternative(s) for s in error.validator_value)
    return error.message


def _alternative(schema: Any) -> str:
    """One alternative of a oneOf/anyOf, in words."""
    if isinstance(schema, dict):
        if "const" in schema:
            return repr(schema["const"])
        if "enum" in schema:
            return "one of " + ", ".join(map(repr, schema["enum"]))
        if set(schema) == {"type"}:
            return f"a {schema['type']}"
        return schema.get("description", str(schema))
    return str(schema)


def _describe(error: ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)
        return (
            f"config key '{_key([*path, extra[0]])}' is unknown (value {error.instance[extra[0]]!r}); "
            f"{_allowed(error)}"
        )
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        enum = error.schema.get("properties", {}).get(missing[0], {}).get("enum")
        allowed = "; allowed: " + ", ".join(map(repr, enum)) if enum else ""
        return f"config key '{_key([*path, missing[0]])}' is missing; it is required{allowed}"
    if error.validator == "propertyNames":
        return f"config key '{_key(path)}': {error.message}"
    return f"config key '{_key(path)}' has value {error.instance!r}: {_allowed(error)}"


def _deepest(error: ValidationError) -> ValidationError:
    """Follow if/then and allOf to the error about the innermost key.

    A oneOf/anyOf whose alternatives all fail at its own key is kept, so that the
    message lists every alternative rather than the first one's complaint.
    """
    while error.context:
        deeper = max(error.context, key=lambda e: len(e.absolute_path))
        if error.validator in ("oneOf", "anyOf") and len(deeper.absolute_path) == len(error.absolute_path):
            break
        error = deeper
    return error


def validate_config(config: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> dict[str, Any]:
    """Validated copy of ``config`` with defaults filled in, or :class:`ConfigError`.

    ``base_dir`` resolves relative paths (checkpoints, real data) for existence checks.
    """
    filled = copy.deepcopy(dict(config))
    validator = DefaultFillingValidator(load_schema())
    errors = sorted(
        validator.iter_errors(filled), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    if errors:
        raise ConfigError(_describe(_deepest(errors[0])))
    for dataset in filled["datasets"].values():
        dataset.setdefault("seed", filled["seed"])
    for model in filled["models"].values():
        model.setdefault("datasets", sorted(filled["datasets"]))
    problems = semantic_errors(filled, Path(base_dir))
    if problems:
        raise ConfigError(problems[0])
    return filled


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``overlay`` (as Snakemake merges config files)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(paths: Iterable[str | os.PathLike], base_dir: str | os.PathLike = ".") -> dict[str, Any]:
    """Merge YAML files in order (later wins) and validate."""
    config: dict[str, Any] = {}
    for path in paths:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(config, base_dir)
