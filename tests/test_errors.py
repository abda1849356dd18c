"""Bad input: one clear line naming the file / key / row, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIGS, run_cli, write_config

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
GOOD = "text\tlabel\nthe food was great .\tpositive\nthe room was dirty .\tnegative\n"


def _data(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return name


def _finetune_with(tmp: Path, train: str, validation: str = GOOD, **data):
    _data(tmp, "validation.tsv", validation)
    return write_config(tmp / "c.yaml", "finetune", output_dir=str(tmp / "out"),
                        data={"data_dir": str(tmp), "train_file": train, "validation_file": "validation.tsv", **data})


def _config_only_model(tmp: Path) -> Path:
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text('{"model_type": "bert"}')
    return FINETUNE


CASES = {
    "missing file": (lambda t: _finetune_with(t, "nope.tsv"), "data.train_file: file not found", []),
    "empty file": (lambda t: _finetune_with(t, _data(t, "e.tsv", "")), "e.tsv is empty", []),
    "not utf-8": (lambda t: _finetune_with(t, _data(t, "b.tsv", b"text\tlabel\ncaf\xe9 ok\tpositive\n")),
                  "b.tsv line 2: not UTF-8", []),
    "missing column": (lambda t: _finetune_with(t, _data(t, "m.tsv", "sentence\tlabel\nhi\tpositive\n")),
                       "m.tsv has no column 'text'", []),
    "wrong delimiter": (lambda t: _finetune_with(t, _data(t, "d.tsv", "text,label\nhi,positive\n")),
                        "is the delimiter right", []),
    "unseen label": (lambda t: _finetune_with(t, _data(t, "ok.tsv", GOOD),
                                              validation=GOOD + "so so .\tneutral\n"),
                     "validation.tsv row 3: label 'neutral' was not seen in training", []),
    "empty text cell": (lambda t: _finetune_with(t, _data(t, "n.csv", "text,label\nfine,positive\n,negative\n")),
                        "n.csv row 2: column 'text' is empty", []),
    "model folder without weights": (lambda t: _config_only_model(t), "holds no model",
                                     ["model.name_or_path={tmp}/model"]),
    "sequence longer than positions": (lambda t: FINETUNE, "data.max_seq_length: 128 is more than the model's 64",
                                       ["data.max_seq_length=128"]),
    "unknown model attribute": (lambda t: FINETUNE, "model.config.hiden_size: not an attribute of bert configs "
                                "(did you mean hidden_size?)", ["model.config.hiden_size=8"]),
    "negative learning rate": (lambda t: FINETUNE, "train.learning_rate: Input should be greater than 0",
                               ["train.learning_rate=-0.1"]),
    "fp16 on cpu": (lambda t: FINETUNE, "fp16 needs a GPU", ["train.mixed_precision=fp16"]),
    "config of the other stage": (lambda t: PRETRAIN, "this is a pretraining config", []),
    "missing config file": (lambda t: t / "absent.yaml", "config file not found", []),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line(name, tmp_path):
    make, expected, overrides = CASES[name]
    config = make(tmp_path)
    overrides = [o.format(tmp=tmp_path) for o in overrides] + [f"output_dir={tmp_path / 'out'}"]
    result = run_cli("finetune", config, *overrides)
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", "train.mixed_precision=fp16", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_evaluate_without_a_model_says_what_to_do(tmp_path):
    result = run_cli("evaluate", FINETUNE, f"output_dir={tmp_path}")
    assert result.exit_code == 2 and "holds no trained model" in result.output
