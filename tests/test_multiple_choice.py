"""Multiple choice (finetune.task: multiple_choice) through the CLI on a tiny model, and its pieces by hand:
per-position accuracy, padded choices, bad rows, infer's {choice, scores}, resume."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from conftest import CONFIGS, read_jsonl, run_cli, write_config
from test_resume import assert_same_run, finish, llmkit

TINY = CONFIGS / "tiny" / "multiple_choice.yaml"
FIELDS = ["context", "question", "answer0", "answer1", "answer2", "answer3", "label"]
# The gold answer eats something edible, the others something that is not: easy, and learnable from scratch.
FOOD = ["bread", "soup", "apple", "cake", "rice", "pasta", "salad", "cheese", "pizza", "banana"]
THINGS = ["truck", "chair", "window", "shoe", "table", "hammer", "bottle", "pencil", "ladder", "radio"]
NAMES = ["anna", "ben", "maria", "tom", "lucy", "omar", "sara", "jack"]


def _rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        name = rng.choice(NAMES)
        label = i % 4
        wrong = [f"{name} ate the {thing} ." for thing in rng.sample(THINGS, 3)]
        choices = wrong[:label] + [f"{name} ate the {rng.choice(FOOD)} ."] + wrong[label:]
        rows.append({"context": f"{name} was hungry at noon .", "question": "what happened ?",
                     **{f"answer{j}": choice for j, choice in enumerate(choices)}, "label": label})
    rng.shuffle(rows)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("choices")
    _write_csv(root / "train.csv", _rows(320, 1))  # CRLF line ends, as Cosmos QA's
    _write_csv(root / "dev.csv", _rows(80, 2))
    return root


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


def _config(tmp_path: Path, data: Path, **train) -> Path:
    return write_config(tmp_path / "mc.yaml", "multiple_choice",
                        data={"data_dir": str(data), "train_file": "train.csv", "validation_file": "dev.csv"},
                        train={"num_train_epochs": 4, "per_device_train_batch_size": 32, "logging_steps": 2,
                               "save_strategy": "no", **train})


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("trained")
    config = _config(out, data)
    ok(run_cli("finetune", config, f"output_dir={out / 'run'}"))
    return config, out / "run"


def test_loss_falls_and_accuracy_beats_chance(trained):
    config, out = trained
    losses = [line["loss"] for line in read_jsonl(out / "metrics.jsonl") if "loss" in line]
    assert losses[0] > 1.3 and losses[-1] < losses[0] - 0.5  # from ln 4 = 1.386
    results = json.loads((out / "eval_results.json").read_text())
    assert results["num_examples"] == 80 and results["accuracy"] > 0.6  # chance: 0.25
    positions = results["per_position"]
    assert list(positions) == ["0", "1", "2", "3"] and all(p["support"] == 20 for p in positions.values())
    assert sum(p["predicted_share"] for p in positions.values()) == pytest.approx(1)


def test_saved_model_loads_in_plain_transformers_and_its_card_shows_how(trained):
    import contextlib
    import io
    import re

    import torch
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    _, out = trained
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForMultipleChoice"]
    assert config["id2label"] == {str(i): str(i) for i in range(4)}
    model, tokenizer = AutoModelForMultipleChoice.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    inputs = tokenizer(["tom was hungry at noon ."] * 2, ["tom ate the ladder .", "tom ate the soup ."], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: v[None] for k, v in inputs.items()}).logits
    assert logits.shape == (1, 2) and logits[0, 1] > logits[0, 0]
    snippet = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    assert "AutoModelForMultipleChoice" in snippet
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(snippet, {})
    assert printed.getvalue().strip()


def test_infer_writes_choice_and_scores_in_input_order(trained, tmp_path):
    config, out = trained
    rows = [{**row, "label": None} for row in _rows(9, 3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({k: v for k, v in row.items() if k != "label"}) + "\n"
                                               for row in rows))
    ok(run_cli("infer", config, f"output_dir={out}", "--input", tmp_path / "in.jsonl",
               "--output", tmp_path / "p.jsonl"))
    predictions = read_jsonl(tmp_path / "p.jsonl")
    assert [p["context"] for p in predictions] == [r["context"] for r in rows]
    assert [p["answer2"] for p in predictions] == [r["answer2"] for r in rows]
    for p in predictions:
        assert len(p["scores"]) == 4 and sum(p["scores"]) == pytest.approx(1, abs=1e-5)
        assert p["choice"] == max(range(4), key=p["scores"].__getitem__)
    gold = [int(row["label"]) for row in _rows(9, 3)]
    assert sum(p["choice"] == g for p, g in zip(predictions, gold)) >= 6


def test_evaluate_saves_per_example_predictions(trained):
    config, out = trained
    ok(run_cli("evaluate", config, f"output_dir={out}", "--save-predictions"))
    records = read_jsonl(out / "eval_predictions.jsonl")
    assert len(records) == 80 and {"context", "answer0", "gold", "predicted", "score"} <= set(records[0])


def test_per_position_accuracy_on_hand_made_outputs():
    from llmkit.objectives.multiple_choice import choice_metrics

    gold = [0, 0, 1, 1, 2, 2, 2, 3]
    predicted = [0, 1, 1, 1, 2, 0, 0, 0]
    metrics = choice_metrics(predicted, gold)
    assert metrics["accuracy"] == 4 / 8
    assert metrics["per_position"] == {
        "0": {"accuracy": 0.5, "support": 2, "predicted_share": 4 / 8},
        "1": {"accuracy": 1.0, "support": 2, "predicted_share": 3 / 8},
        "2": {"accuracy": 1 / 3, "support": 3, "predicted_share": 1 / 8},
        "3": {"accuracy": 0.0, "support": 1, "predicted_share": 0.0}}
    # a position never gold: its accuracy is unknown, not 0
    assert choice_metrics([2], [0])["per_position"]["2"] == {"accuracy": None, "support": 0, "predicted_share": 1.0}


def test_rows_with_fewer_choices_are_padded_and_their_padding_never_wins():
    import torch

    from llmkit.config import load_config
    from llmkit.objectives.multiple_choice import MultipleChoice

    cfg = load_config(TINY, ["data.choice_columns=null", "data.choices_column=choices"])
    tokenizer = type("Tokenizer", (), {"pad_token_id": 0})()
    task = MultipleChoice(cfg, tokenizer, {0: "0", 1: "1", 2: "2"})
    rows = {"input_ids": [[[5, 6, 7], [5, 8]], [[5, 9], [5, 6], [5, 7, 7, 7]]],
            "token_type_ids": [[[0, 0, 1], [0, 1]], [[0, 1], [0, 1], [0, 1, 1, 1]]], "labels": [1, 2]}
    batch = task.collate(rows, [0, 1], 0)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 3, 4)
    assert batch["input_ids"][0, 2].tolist() == [0, 0, 0, 0] and batch["attention_mask"][0, 2].tolist() == [1, 0, 0, 0]
    assert batch["choice_mask"].tolist() == [[True, True, False], [True, True, True]]

    class Model:  # the filler choice scores highest: still never picked
        def __call__(self, **inputs):
            return type("Out", (), {"logits": torch.tensor([[0.0, 1.0, 9.0], [0.0, 0.0, 1.0]])})()

    (first, gold, _), (second, _, _) = task.eval_outputs(Model(), batch)
    assert (first, gold, second) == (1, 1, 2)
    loss, count = task.loss(Model(), batch)
    assert count == 2 and torch.isfinite(loss)


def test_a_list_column_of_choices(tmp_path):
    rows = _rows(64, 4)
    lines = [json.dumps({"context": r["context"], "question": r["question"], "label": r["label"],
                         "choices": [r[f"answer{j}"] for j in range(4)][:4 - n % 2 if r["label"] < 3 else 4]})
             for n, r in enumerate(rows)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path / "mc.yaml", "multiple_choice",
                          data={"data_dir": str(tmp_path), "train_file": "train.jsonl",
                                "validation_file": "train.jsonl", "choice_columns": None, "choices_column": "choices"},
                          train={"num_train_epochs": 1, "save_strategy": "no"})
    ok(run_cli("finetune", config, f"output_dir={tmp_path / 'out'}"))
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["num_examples"] == 64 and 0 <= results["accuracy"] <= 1


def test_a_missing_choice_column_names_it_and_the_file(data, tmp_path):
    result = run_cli("finetune", _config(tmp_path, data), f"output_dir={tmp_path / 'out'}",
                     "data.choice_columns=[answer0,answer1,answer2,answer4]")
    assert result.exit_code == 2, result.output
    assert "data.train_file: " in result.output and "train.csv has no column 'answer4'" in result.output
    assert "Traceback" not in result.output


def test_a_label_out_of_range_names_the_row_or_is_skipped(tmp_path):
    rows = _rows(40, 5)
    rows[6]["label"] = 4
    _write_csv(tmp_path / "train.csv", rows)
    _write_csv(tmp_path / "dev.csv", _rows(8, 6))
    config = _config(tmp_path, tmp_path, num_train_epochs=1)
    refused = run_cli("finetune", config, f"output_dir={tmp_path / 'out'}")
    assert refused.exit_code == 2, refused.output
    assert "train.csv line 8: label '4' is not a choice's position (0 to 3)" in refused.output
    skipped = ok(run_cli("finetune", config, f"output_dir={tmp_path / 'out'}", "data.skip_bad_rows=true"))
    assert "skipped 1 of 40 rows" in skipped.output


def test_prompt_tuning_is_refused_in_one_line(data, tmp_path):
    result = run_cli("finetune", _config(tmp_path, data), f"output_dir={tmp_path / 'out'}", "finetune.method=prompt")
    assert result.exit_code == 2 and "finetune.method: prompt" in result.output and "Traceback" not in result.output


def test_killed_and_resumed_is_bitwise_the_uninterrupted_run(data, tmp_path, monkeypatch):
    import test_resume

    config = _config(tmp_path, data, num_train_epochs=2, save_strategy="steps", save_steps=8, eval_strategy="steps",
                     eval_steps=8, save_total_limit=None)
    monkeypatch.setitem(test_resume.RUNS, "finetune", (config, []))
    finish(llmkit("finetune", tmp_path / "baseline"))
    dies_after_8 = ("import os, llmkit.checkpoint as c\n_save = c.save_checkpoint\n"
                    "def save(*a, **k):\n"
                    "    folder = _save(*a, **k)\n"
                    "    if folder.name == 'checkpoint-8': os._exit(137)\n"
                    "    return folder\n"
                    "c.save_checkpoint = save")
    out = tmp_path / "run"
    finish(llmkit("finetune", out, prelude=dies_after_8), expect=137)
    output = finish(llmkit("finetune", out, "train.resume_from_checkpoint=latest"))
    assert f"from {out / 'checkpoint-8'} at step 8" in output
    assert_same_run(out, tmp_path / "baseline")
