"""Loading a config: YAML (its bases first), then `key.sub=value` overrides, then validation, every problem
reported at once, each naming the file or override its key came from when not the config itself.

    cfg = load_config("configs/tiny/finetune.yaml", ["train.learning_rate=1e-4"], stage="finetune")
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from llmkit.config.compose import OVERRIDE, Composed, compose
from llmkit.config.schema import Config
from llmkit.errors import LlmkitError

PRETRAIN_STAGES = ("preprocess", "pretrain")
FINETUNE_STAGES = ("finetune",)


def load_config(path: str | os.PathLike, overrides: list[str] = (), stage: str | None = None) -> Config:
    """Read YAML (bases first), apply `a.b=value` overrides, validate; every problem is reported at once."""
    return load_composed(path, overrides, stage)[0]


def load_composed(path: str | os.PathLike, overrides: list[str] = (), stage: str | None = None
                  ) -> tuple[Config, Composed]:
    """The validated config, and the merged tree that knows which file or override set each value."""
    composed = compose(path, overrides)
    raw = composed.tree
    for section, other in (("pretrain", "finetune"), ("finetune", "pretrain")):
        if section in raw and raw[section] is None and raw.get(other) is not None:
            del raw[section]  # a saved config's `pretrain: null` beside its finetune section (and the reverse)
    if stage is not None:
        _check_stage(raw, stage, path)
        # A config without either section takes the stage's defaults (evaluate/infer: fine-tuning).
        if "pretrain" not in raw and "finetune" not in raw:
            raw["pretrain" if stage in PRETRAIN_STAGES else "finetune"] = {}
    try:
        return Config.model_validate(raw), composed
    except ValidationError as e:
        lines = [_describe(err, composed, str(path)) for err in e.errors()]
        raise LlmkitError(f"{path}: invalid config\n  " + "\n  ".join(lines)) from None


def _check_stage(raw: dict, stage: str, path) -> None:
    if stage in PRETRAIN_STAGES and "finetune" in raw:
        raise LlmkitError(f"{path}: this is a fine-tuning config (it has a `finetune:` section); "
                          f"run `llmkit finetune` with it, or give `llmkit {stage}` a pretraining config")
    if stage in FINETUNE_STAGES and "pretrain" in raw:
        raise LlmkitError(f"{path}: this is a pretraining config (it has a `pretrain:` section); "
                          f"run `llmkit pretrain` with it, or give `llmkit {stage}` a fine-tuning config")


def _describe(err: dict, composed: Composed, top: str) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc)
        return f"{key}: unknown key{_origin(composed, key, top)}" + (f" (did you mean {hint}?)" if hint else "")
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    if not key and (named := re.match(r"([a-z_]+\.[a-z_]+): ", msg)):  # a whole-config check that names its key
        return f"{msg}{_origin(composed, named[1], top)}"
    if key and (named := re.match(r"([a-z_]+): ", msg)):  # a section's check that names the key in it: section.key
        return f"{key}.{msg}{_origin(composed, f'{key}.{named[1]}', top)}"
    return f"{key or 'config'}: {msg}{_origin(composed, key, top)}"


def _origin(composed: Composed, key: str, top: str) -> str:
    """Where a key with a problem came from, when not from the config file named on the command line."""
    origin = composed.origin_of(key)
    if origin is None or origin == top:
        return ""
    return " (from a command-line override)" if origin == OVERRIDE else f" (from {origin})"


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


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config (every default filled in) next to the run's outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = resolved_yaml(cfg)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def resolved_yaml(cfg: Config) -> str:
    """The config as YAML with every default filled in: what a run saves, what `llmkit config` prints."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
