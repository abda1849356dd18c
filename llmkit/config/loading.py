"""Loading a config: YAML, then `key.sub=value` overrides, then validation, every problem reported at once.

    cfg = load_config("configs/tiny/finetune.yaml", ["train.learning_rate=1e-4"], stage="finetune")
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmkit.config.schema import Config
from llmkit.errors import LlmkitError

PRETRAIN_STAGES = ("preprocess", "pretrain")
FINETUNE_STAGES = ("finetune",)

def load_config(path: str | os.PathLike, overrides: list[str] = (), stage: str | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate; every problem is reported at once."""
    raw = _read_yaml(Path(path))
    overridden = set()
    for item in overrides:
        keys, value = _parse_override(item)
        _set_path(raw, keys, value)
        overridden.add(".".join(keys))
    # A model given on the command line replaces the file's from-scratch recipe (and vice versa).
    model = raw.get("model")
    if isinstance(model, dict) and "name_or_path" in model and "config" in model:
        if "model.name_or_path" in overridden and "model.config" not in overridden:
            del model["config"]
        elif "model.config" in overridden and "model.name_or_path" not in overridden:
            del model["name_or_path"]
    if stage is not None:
        _check_stage(raw, stage, path)
        # A config without either section takes the stage's defaults (evaluate/infer: fine-tuning).
        if "pretrain" not in raw and "finetune" not in raw:
            raw["pretrain" if stage in PRETRAIN_STAGES else "finetune"] = {}
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, overridden) for err in e.errors()]
        raise LlmkitError(f"{path}: invalid config\n  " + "\n  ".join(lines)) from None


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmkitError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LlmkitError(f"{path}: cannot read config: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise LlmkitError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raise LlmkitError(f"{path}: config file is empty")
    if not isinstance(raw, dict):
        raise LlmkitError(f"{path}: a config is a mapping of keys to values, got {type(raw).__name__}")
    return raw


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise LlmkitError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if value == "" and text.strip():  # a lone `|` or `>` is a YAML block marker; on the command line it means itself
        value = text
    return key.split("."), value


def _set_path(raw: dict, keys: list[str], value: Any) -> None:
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise LlmkitError(f"override {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def _check_stage(raw: dict, stage: str, path) -> None:
    if stage in PRETRAIN_STAGES and "finetune" in raw:
        raise LlmkitError(f"{path}: this is a fine-tuning config (it has a `finetune:` section); "
                          f"run `llmkit finetune` with it, or give `llmkit {stage}` a pretraining config")
    if stage in FINETUNE_STAGES and "pretrain" in raw:
        raise LlmkitError(f"{path}: this is a pretraining config (it has a `pretrain:` section); "
                          f"run `llmkit pretrain` with it, or give `llmkit {stage}` a fine-tuning config")


def _describe(err: dict, overridden: set[str]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    origin = " (from a command-line override)" if key in overridden else ""
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc)
        return f"{key}: unknown key{origin}" + (f" (did you mean {hint}?)" if hint else "")
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    if not key and re.match(r"[a-z_]+\.[a-z_]+: ", msg):  # a whole-config check that names its key itself
        return f"{msg}{origin}"
    if key and re.match(r"[a-z_]+: ", msg):  # a section's check that names the key in it: section.key
        return f"{key}.{msg}{origin}"
    return f"{key or 'config'}: {msg}{origin}"


def _suggest(loc: list[str]) -> str | None:
    """Closest valid key to an unknown one, searching its own section first, then all sections."""
    section: type[BaseModel] = Config
    keyed = False  # the previous key was a `name: section` mapping (finetune.tasks): this part is a name
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        field = section.model_fields.get(part)
        inner = _section_type(field.annotation) if field else None
        if inner is None:
            break
        section = inner
        keyed = "dict" in str(field.annotation)
    names = list(section.model_fields)
    match = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    if match:
        return ".".join([*loc[:-1], match[0]])
    everywhere = {f"{name}.{sub}": sub for name, field in Config.model_fields.items()
                  if (inner := _section_type(field.annotation)) for sub in inner.model_fields}
    match = difflib.get_close_matches(loc[-1], list(everywhere.values()), n=1, cutoff=0.75)
    return next((k for k, v in everywhere.items() if match and v == match[0]), None)


def _section_type(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        if (inner := _section_type(arg)) is not None:  # dict[str, Section] | None
            return inner
    return None


def flatten(tree: dict, prefix: str = "", whole: tuple[str, ...] = ()) -> dict:
    """A nested config as {"section.key": value}; sections named in `whole` stay one value (model.config)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in whole:
            flat.update(flatten(value, f"{prefix}{key}.", whole))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config (every default filled in) next to the run's outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
