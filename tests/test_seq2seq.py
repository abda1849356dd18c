"""Sequence-to-sequence fine-tuning (translation, summarization) on tiny models: English digit words to German
(llmkit/sample_data/digits_*), parallel files and JSON Lines, BLEU / chrF / ROUGE against several references,
resume, BERT2BERT warm-started from a tiny BERT, and `infer` giving what the saved model's generate() gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, read_jsonl, run_cli
from test_resume import assert_same_run

SEQ2SEQ = CONFIGS / "tiny" / "seq2seq.yaml"
SAMPLE = REPO / "llmkit" / "sample_data"
FAST = ["train.learning_rate=1e-2", "train.per_device_train_batch_size=32", "train.logging_steps=5"]


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seq2seq") / "out"
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={out}", "train.num_train_epochs=4", *FAST))
    return out


def test_translation_learns_the_toy_task(trained):
    losses = [line["loss"] for line in read_jsonl(trained / "metrics.jsonl") if "loss" in line]
    assert losses[-1] < losses[0] / 3
    evaluations = [line for line in read_jsonl(trained / "metrics.jsonl") if "eval_chrf" in line]
    assert evaluations[-1]["eval_chrf"] > evaluations[0]["eval_chrf"] + 15
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["chrf"] > 35 and results["rouge1"] > 50
    assert set(results) >= {"loss", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "gen_len"}


def test_evaluate_scores_the_test_split_with_predictions(trained):
    ok(run_cli("evaluate", SEQ2SEQ, f"output_dir={trained}", "--split", "test", "--save-predictions"))
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["num_examples"] == 40 and results["chrf"] > 30
    records = read_jsonl(next(trained.glob("*predictions*.jsonl")))
    first = (SAMPLE / "digits_test.en").read_text().splitlines()[0]
    assert records[0]["text"] == first and records[0]["gold"] == [(SAMPLE / "digits_test.de").read_text()
                                                                 .splitlines()[0]]
    assert isinstance(records[0]["predicted"], str)


def test_infer_writes_what_generate_gives(trained, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    texts = ["four two", "one one nine seven", "zero eight three five six"]
    ok(run_cli("infer", SEQ2SEQ, f"output_dir={trained}", "--input", "-", "--output", tmp_path / "p.jsonl",
               input="\n".join(texts) + "\n"))
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert [r["text"] for r in rows] == texts
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSeq2SeqLM.from_pretrained(trained).eval()
    for row in rows:
        inputs = tokenizer(row["text"], return_tensors="pt", return_token_type_ids=False)
        output = model.generate(**inputs, max_new_tokens=16)
        assert row["generated"] == tokenizer.decode(output[0], skip_special_tokens=True).strip()


def test_scores_against_every_reference():
    from llmkit.objectives.generation_metrics import generation_metrics

    refs = [["the cat sat on the mat", "a cat was sitting on the mat"], ["hello world"]]
    best = generation_metrics(["a cat was sitting on the mat", "hello world"], refs)
    assert best["bleu"] == pytest.approx(100) and best["chrf"] == pytest.approx(100)
    assert best["rouge1"] == pytest.approx(100) and best["rougeL"] == pytest.approx(100)
    only_first = generation_metrics(["a cat was sitting on the mat", "hello world"], [r[:1] for r in refs])
    assert only_first["bleu"] < 60 and only_first["rouge2"] < 100
    wrong = generation_metrics(["dogs bark loudly", "goodbye moon"], refs)
    assert wrong["bleu"] < 1 and wrong["rouge1"] == 0 and wrong["gen_len"] == 2.5


def test_source_lists_are_joined_and_target_lists_are_references():
    import datasets

    from llmkit.config import load_config
    from llmkit.objectives.seq2seq import Seq2Seq

    cfg = load_config(SEQ2SEQ, ["output_dir=/tmp/unused"])
    rows = datasets.Dataset.from_dict({"source": [["First sentence .", "Second one ."]],
                                       "target": [["tl;dr one", "tl;dr two"]]})
    normal = Seq2Seq.normalized(cfg.data, rows, "data.train_file")
    assert normal[0] == {"source": "First sentence . Second one .", "target": ["tl;dr one", "tl;dr two"]}
    assert Seq2Seq.row_problem(cfg.data, {"target": []}, {}) == "column 'target' has no reference"


def _parallel(folder: Path, english: list[str], german: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.en").write_text("\n".join(english) + "\n")
    (folder / "pairs.de").write_text("\n".join(german) + "\n")
    return folder


def test_misaligned_parallel_files_name_both_and_their_lengths(tmp_path):
    data = _parallel(tmp_path, ["one two", "", "three", "four"], ["eins zwei", "drei", "vier"])
    result = run_cli("finetune", SEQ2SEQ, f"output_dir={tmp_path / 'out'}", f"data.data_dir={data}",
                     "data.train_file=pairs", "data.validation_file=null", "data.test_file=null")
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"{data / 'pairs.en'} has 4 lines but {data / 'pairs.de'} has 3" in message
    assert "line 2 is empty on one side only" in message


def test_a_line_empty_on_one_side_is_a_bad_row(tmp_path):
    data = _parallel(tmp_path, ["one two", "three"], ["eins zwei", ""])
    result = run_cli("finetune", SEQ2SEQ, f"output_dir={tmp_path / 'out'}", f"data.data_dir={data}",
                     "data.train_file=pairs", "data.validation_file=null", "data.test_file=null")
    assert result.exit_code == 2 and "line 2: the target side is empty" in " ".join(result.output.split())


def test_resume_is_bitwise(tmp_path):
    steps = ["train.max_steps=12", "train.save_strategy=steps", "train.save_steps=6", "train.eval_strategy=steps",
             "train.eval_steps=6", "train.save_total_limit=null", "train.logging_steps=1"]
    baseline, resumed = tmp_path / "baseline", tmp_path / "resumed"
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={baseline}", *FAST, *steps))
    shutil.copytree(baseline / "checkpoint-6", resumed / "checkpoint-6")  # as a run killed after step 6 leaves it
    shutil.copy(baseline / "metrics.jsonl", resumed / "metrics.jsonl")
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={resumed}", *FAST, *steps, "train.resume_from_checkpoint=latest"))
    assert_same_run(resumed, baseline)


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    return make_tiny_bert(tmp_path / "bert")


def make_tiny_bert(folder: Path) -> Path:
    """A 1-layer BERT (hidden 32) with a wordpiece tokenizer of the digit words, saved like a pretrained one."""
    from transformers import BertConfig, BertModel

    from llmkit.config import TokenizerSection
    from llmkit.data.tokenizer import train_tokenizer

    lines = [line for side in ("en", "de") for line in (SAMPLE / f"digits_train.{side}").read_text().splitlines()]
    tokenizer = train_tokenizer(TokenizerSection(vocab_size=200, lowercase=False), lambda: iter(lines))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bert2bert_warm_starts_trains_and_reloads(tiny_bert, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    out = tmp_path / "out"
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={out}", f"model.name_or_path={tiny_bert}", "model.config=null",
               "model.encoder_decoder=true", "train.max_steps=3", "train.eval_strategy=no", "train.save_strategy=no",
               "train.logging_steps=1"))
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, EncoderDecoderModel)
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    assert (model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    encoder = model.encoder.embeddings.word_embeddings.weight
    assert encoder.shape[0] == len(tokenizer)
    inputs = tokenizer(["four two"], return_tensors="pt", return_token_type_ids=False)
    assert model.generate(**inputs, max_new_tokens=4).shape[1] <= 5
