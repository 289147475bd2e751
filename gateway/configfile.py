"""Load a declarative YAML file into a typed settings model, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

MAX_CONFIG_BYTES = 4 * 1024 * 1024
Model = TypeVar("Model", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and each bad field."""


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def load_model(path: Path | str, model: type[Model]) -> Model:
    """Read ``path`` as YAML (safe loader, bounded size) and validate it; relative paths are resolved
    against the file's own folder."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping at the top level")
    try:
        return model.model_validate(raw, context={"base": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
