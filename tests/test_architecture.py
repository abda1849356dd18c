"""The rules that keep llmkit one loop over plug-ins: only llmkit/objectives (and the config schema, which
validates the names) knows which objective or task a run has; each family follows the protocol; modules
stay small enough to read."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = REPO / "llmkit"
KNOWS_NAMES = {"objectives", "config"}  # the registry, and the schema that validates config values against it
MAX_LINES = 400


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "sample_data" not in p.parts)


def test_only_the_registry_names_an_objective_or_task():
    from llmkit.objectives import OBJECTIVES, TASKS, USES

    names = set(OBJECTIVES) | set(TASKS) | set(USES)
    named = [f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}"
             for path in _modules() if path.relative_to(PACKAGE).parts[0] not in KNOWS_NAMES
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and node.value in names]
    assert named == []


def test_every_family_follows_the_protocol():
    from transformers.pipelines import SUPPORTED_TASKS

    from llmkit.objectives import OBJECTIVES, TASKS
    from llmkit.objectives.base import ModelKind
    from llmkit.objectives.objective import Objective
    from llmkit.objectives.task import Task

    for registry, base in ((OBJECTIVES, Objective), (TASKS, Task)):
        for name, family in registry.items():
            assert issubclass(family, base), name
            assert isinstance(family.model_kind, ModelKind) and family.model_kind.auto() is not None, name
            assert family.pipeline_task is None or family.pipeline_task in SUPPORTED_TASKS, (name, family.pipeline_task)
            for method in ("collate", "count", "loss", "metrics"):
                assert callable(getattr(family, method, None)), (name, method)
    from peft import TaskType

    assert all(family.peft_task_type is None or family.peft_task_type in TaskType.__members__
               for family in TASKS.values())


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("first", ["llmkit.config", "llmkit.objectives", "llmkit.stages.infer", "llmkit.trainer"])
def test_every_module_imports_first(first):
    """The schema reads its choices from the registry: no import order may close a cycle."""
    result = subprocess.run([sys.executable, "-c", f"import {first}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_registry_and_the_config_do_not_import_torch():
    """ONNX Runtime's `infer` reads the config and the families without torch: they import it where they use it."""
    code = "import sys, llmkit.objectives, llmkit.config; print(sorted(m for m in ('torch', 'accelerate') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
