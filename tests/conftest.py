"""Shared fixtures: offline, a private cache, in-process CLI runs, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"  # a stray hub lookup fails at once instead of waiting on timeouts
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session", autouse=True)
def llmkit_cache(tmp_path_factory):
    """One preprocessing cache for the session: later tests reuse earlier tokenization."""
    path = tmp_path_factory.mktemp("llmkit-cache")
    os.environ["LLMKIT_CACHE_DIR"] = str(path)
    return path


def run_cli(*args: str, input: str | None = None):
    """`llmkit ARGS` in this process (importing torch once per session instead of per call)."""
    from accelerate.state import AcceleratorState, GradientState
    from typer.testing import CliRunner

    from llmkit.cli import app

    # Accelerate keeps process-wide singletons; each run starts from a clean one, as a new process would.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_config(path: Path, base: str, **sections) -> Path:
    """A copy of configs/tiny/<base>.yaml with some sections updated (a nested dict per section)."""
    cfg = yaml.safe_load((CONFIGS / "tiny" / f"{base}.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path
