"""`llmkit validate`: every problem of a config at once, the facts about its data and the plan, in seconds,
with nothing trained or written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONFIGS, run_cli
from test_configs import SHIPPED, _local_data

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
GOOD = "text\tlabel\nthe food was great .\tpositive\nthe room was dirty .\tnegative\n"


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(config, tmp_path):
    result = run_cli("validate", config, f"output_dir={tmp_path / 'out'}", *_local_data(config, tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{config}: valid"), result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_facts_and_the_plan_of_a_config(tmp_path):
    result = run_cli("validate", FINETUNE, f"output_dir={tmp_path / 'out'}", "--json")
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.output)
    facts = found["facts"]
    assert found["valid"] and found["problems"] == []
    assert facts["rows"] == "train 2,000 rows, validation 300 rows, test 300 rows"
    assert facts["labels train"] == ("positive 51.9%, negative 48.1% (always predicting the majority class scores "
                                     "51.9%)")
    assert facts["tokens train"].startswith("p50 14, p90 20, p99 23, max 24; 0.0% truncated at data.max_seq_length 64")
    assert facts["batch"] == "32 per device x 1 processes x 1 accumulation = 32"
    assert facts["steps"] == "252 (63 per epoch, 4.00 epochs)"
    # the same model the run builds: its banner says 343,426 parameters
    assert facts["parameters"] == "343,426 trainable of 343,426 (full)"
    memory = facts["memory"]
    assert memory.startswith("~") and all(part in memory for part in ("weights 1.3", "gradients 1.3", "optimizer 2.6"))
    result = run_cli("validate", FINETUNE, f"output_dir={tmp_path / 'out'}", "--processes", "4", "--json")
    assert json.loads(result.output)[0]["facts"]["steps"] == "64 (16 per epoch, 4.00 epochs)"


def test_every_problem_at_once_and_duplicates_across_splits(tmp_path):
    (tmp_path / "train.tsv").write_text(GOOD + GOOD.split("\n", 1)[1] * 4)
    (tmp_path / "test.tsv").write_text(GOOD + "so so .\tneutral\n\tpositive\n")
    result = run_cli("validate", FINETUNE, f"output_dir={tmp_path / 'out'}", f"data.data_dir={tmp_path}",
                     "data.train_file=train.tsv", "data.validation_file=missing.tsv", "data.test_file=test.tsv",
                     "data.max_seq_length=128", "finetune.method=lora")
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{FINETUNE}: 4 problems"
    problems = [line for line in lines if line.startswith("  error: ")]
    assert len(problems) == 4, result.output
    assert "data.validation_file: file not found" in problems[0]
    assert ("data.test_file: 2 bad rows in" in problems[1] and "1 row: label 'neutral' was not seen in training "
            "(line 4); 1 row: column 'text' is empty (line 5)" in problems[1])
    assert "data.max_seq_length: 128 is more than the model's 64 positions" in problems[2]
    assert "finetune.method: lora adapts a pretrained model" in problems[3]
    assert "train repeats 8 of its texts" in result.output
    assert "2 texts of test are in train too (e.g. 'the food was great .'; 'the room was dirty .')" in result.output


def test_many_configs_a_glob_and_a_broken_one(tmp_path):
    (tmp_path / "bad.yaml").write_text("output_dir: x\ntrain:\n  learnin_rate: 1\n")
    result = run_cli("validate", FINETUNE, CONFIGS / "tiny" / "pretrain.yaml", tmp_path / "bad.yaml",
                     f"output_dir={tmp_path / 'out'}")
    assert result.exit_code == 2
    assert f"{FINETUNE}: valid" in result.output and f"{CONFIGS / 'tiny' / 'pretrain.yaml'}: valid" in result.output
    assert f"{tmp_path / 'bad.yaml'}: 1 problem" in result.output and "did you mean train.learning_rate?" in result.output
    assert "rows          train 1,500 documents" in result.output
    assert run_cli("validate", "train.max_steps=3").output == "error: validate: give at least one config file (YAML)\n"
    (tmp_path / "_base.yaml").write_text("seed: 1\n")
    (tmp_path / "fsdp.yaml").write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n")
    result = run_cli("validate", tmp_path / "_base.yaml", tmp_path / "fsdp.yaml")
    assert result.exit_code == 0 and "_base.yaml: skipped (a base that configs name in `base:`" in result.output \
        and "fsdp.yaml: skipped (an Accelerate config file" in result.output


def test_a_resume_that_would_be_refused_is_a_problem(tmp_path):
    out = tmp_path / "out"
    run = [f"output_dir={out}", "train.max_steps=2", "train.save_strategy=steps", "train.save_steps=1",
           "train.eval_strategy=no", "train.save_total_limit=null", "train.resume_from_checkpoint=latest"]
    assert run_cli("finetune", FINETUNE, *run).exit_code == 0
    (out / "trainer_state.json").unlink()  # unfinished: resumable from its newest checkpoint
    result = run_cli("validate", FINETUNE, *run)
    assert result.exit_code == 0 and "resume" in result.output and "exact" in result.output, result.output
    result = run_cli("validate", FINETUNE, *run, "model.config.hidden_size=64", "model.config.intermediate_size=128")
    assert result.exit_code == 2 and "refused" in result.output and "model.config.hidden_size 128 -> 64" \
        in result.output, result.output
