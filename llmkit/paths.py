"""Paths in a config: `pkg:` folders inside installed packages, data files against data.data_dir, the cache."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.config import DataSection

SPLITS = ("train", "validation", "test")


def resolve_path(path: str | None, base: str | None = None) -> str | None:
    """`pkg:PACKAGE/sub/path` -> the folder inside that installed package; relative -> against base."""
    if path is None:
        return None
    if path.startswith("pkg:"):
        package, _, sub = path[4:].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise LlmkitError(f"{path}: Python package {package!r} is not installed")
        return str(Path(list(spec.submodule_search_locations)[0]) / sub)
    expanded = os.path.expanduser(path)
    if base is not None and not os.path.isabs(expanded):
        return os.path.join(resolve_path(base), expanded)
    return expanded



def cache_root(data: DataSection) -> Path:
    """Shared cache of preprocessed corpora and trained tokenizers (not per output_dir)."""
    configured = data.cache_dir or os.environ.get("LLMKIT_CACHE_DIR") or "~/.cache/llmkit"
    return Path(resolve_path(configured)).expanduser()


def split_key(split: str, task: str | None = None) -> str:
    """The config key of a split's file, as messages name it (`finetune.tasks.<task>.` first for a task's)."""
    return f"finetune.tasks.{task}.data.{split}_file" if task else f"data.{split}_file"


def split_of(key: str) -> str:
    """The split a `...data.<split>_file` key names (train for any other key)."""
    return next((split for split in SPLITS if key.endswith(f"data.{split}_file")), "train")


def split_file(data: DataSection, split: str) -> str | None:
    """A split's file (data.<split>_file) resolved against data.data_dir; None when not set."""
    return resolve_path(getattr(data, f"{split}_file"), data.data_dir)
