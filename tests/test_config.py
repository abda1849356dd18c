"""Configs: every shipped YAML validates; mistakes name the key and suggest the fix; overrides work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, run_cli
from llmkit.config import load_config, save_config
from llmkit.errors import LlmkitError
from test_configs import SHIPPED  # every llmkit config: no base, no Accelerate file


def test_shipped_configs_exist():
    assert {p.name for p in SHIPPED} >= {"pretrain.yaml", "finetune.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.output_dir
    untrained = cfg.infer.task != "auto" and cfg.pretrain is None and cfg.finetune is None  # embed / zero-shot
    assert untrained or (cfg.pretrain is None) != (cfg.finetune is None), "a shipped config says what it is for"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


MINIMAL = "output_dir: out\nmodel:\n  config: {model_type: bert}\n"


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(LlmkitError) as e:
        load_config(_write(tmp_path, MINIMAL + "train:\n  learning_rat: 0.1\n"))
    assert "train.learning_rat: unknown key (did you mean train.learning_rate?)" in str(e.value)


def test_key_in_the_wrong_section_is_pointed_to_its_section(tmp_path):
    with pytest.raises(LlmkitError) as e:
        load_config(_write(tmp_path, MINIMAL + "data:\n  learning_rate: 0.1\n"))
    assert "data.learning_rate: unknown key (did you mean train.learning_rate?)" in str(e.value)


def test_wrong_type_and_range_name_key_and_value(tmp_path):
    with pytest.raises(LlmkitError) as e:
        load_config(_write(tmp_path, MINIMAL + "train:\n  learning_rate: -1\n  per_device_train_batch_size: many\n"))
    message = str(e.value)
    assert "train.learning_rate: Input should be greater than 0 (got -1)" in message
    assert "train.per_device_train_batch_size:" in message and "'many'" in message  # every problem at once


def test_missing_required_key(tmp_path):
    with pytest.raises(LlmkitError, match="output_dir: required key is missing"):
        load_config(_write(tmp_path, "model:\n  config: {model_type: bert}\n"))


def test_yaml_syntax_error_gives_the_line(tmp_path):
    with pytest.raises(LlmkitError, match=r"line 3, column 1: YAML syntax error: found character '\\t'"):
        load_config(_write(tmp_path, "output_dir: out\ntrain:\n\tlearning_rate: 1\n"))


def test_overrides_are_parsed_as_yaml_scalars(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), ["train.learning_rate=1e-4", "train.max_steps=7",
                                                  "train.mixed_precision=bf16", "data.dedupe=true"])
    assert cfg.train.learning_rate == 1e-4 and cfg.train.max_steps == 7
    assert cfg.train.mixed_precision == "bf16" and cfg.data.dedupe is True


def test_override_of_unknown_key_says_it_came_from_the_command_line(tmp_path):
    with pytest.raises(LlmkitError) as e:
        load_config(_write(tmp_path, MINIMAL), ["train.max_step=5"])
    assert "train.max_step: unknown key (from a command-line override) (did you mean train.max_steps?)" in str(e.value)


def test_model_override_replaces_the_from_scratch_recipe(tmp_path):
    cfg = load_config(CONFIGS / "tiny" / "finetune.yaml", ["model.name_or_path=runs/tiny-mlm"])
    assert cfg.model.name_or_path == "runs/tiny-mlm" and cfg.model.config is None


def test_model_source_in_file_must_be_one(tmp_path):
    with pytest.raises(LlmkitError, match="not both"):
        load_config(_write(tmp_path, MINIMAL.replace("model:\n", "model:\n  name_or_path: x\n")))


def test_stage_mismatch_is_refused():
    with pytest.raises(LlmkitError, match="fine-tuning config.*llmkit finetune"):
        load_config(CONFIGS / "tiny" / "finetune.yaml", stage="pretrain")
    with pytest.raises(LlmkitError, match="pretraining config.*llmkit pretrain"):
        load_config(CONFIGS / "tiny" / "pretrain.yaml", stage="finetune")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "tiny" / "pretrain.yaml", ["train.learning_rate=0.01"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["train"]["learning_rate"] == 0.01
    assert saved["train"]["adam_beta2"] == 0.999  # defaults are written out, not left implicit
    assert load_config(tmp_path / "config.yaml") == cfg


def test_cli_config_error_is_one_clean_line_and_exit_2(tmp_path):
    result = run_cli("pretrain", CONFIGS / "tiny" / "pretrain.yaml", "train.learning_rat=1")
    assert result.exit_code == 2
    assert "did you mean train.learning_rate?" in result.output
    assert "Traceback" not in result.output


def test_cli_help_lists_the_stages_and_every_objective_task_and_method():
    from typing import get_args

    from llmkit.config import FinetuneSection
    from llmkit.objectives import OBJECTIVES, TASKS, USES

    result = run_cli("--help")
    assert result.exit_code == 0
    for stage in ("preprocess", "pretrain", "finetune", "evaluate", "infer", "report"):
        assert stage in result.output
    listed = {stage: " ".join(run_cli(stage, "--help").output.split()) for stage in ("pretrain", "finetune", "infer")}
    assert all(name in listed["pretrain"] for name in OBJECTIVES)
    methods = get_args(FinetuneSection.model_fields["method"].annotation)
    assert all(name in listed["finetune"] for name in [*TASKS, *methods])
    assert all(name in listed["infer"] for name in USES)


def test_config_reference_is_up_to_date():
    """docs/config.md is generated from the field docstrings; regenerate it after changing the schema."""
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + "\nrun: python scripts/gen_config_docs.py"


def test_a_bad_duration_is_reported_with_every_other_problem():
    result = run_cli("pretrain", CONFIGS / "tiny" / "pretrain.yaml", "output_dir=x", "train.max_time=5 minutes",
                     "train.learnin_rate=1", "train.max_steps=0")
    assert result.exit_code == 2
    assert result.output.splitlines()[1:] == [
        "  train.max_steps: must be a positive number of steps, or -1 to use num_train_epochs (from a command-line "
        "override)",
        "  train.max_time: '5 minutes' is not a positive duration like 30m, 2h, 1h30m or 90s (from a command-line "
        "override)",
        "  train.learnin_rate: unknown key (from a command-line override) (did you mean train.learning_rate?)"]


def test_a_saved_config_loads_for_its_own_stage(tmp_path):
    """output_dir/config.yaml has `pretrain: null` beside its finetune section; it is a fine-tuning config as it is."""
    from llmkit.config import load_config, save_config

    cfg = load_config(CONFIGS / "tiny" / "finetune.yaml", [f"output_dir={tmp_path}"], stage="finetune")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml", [], stage="finetune") == cfg
