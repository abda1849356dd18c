"""T5 span corruption (pretrain.objective: span_corruption): noise masks, the corrupted inputs and targets,
training a tiny T5 from scratch, bitwise resume, the saved folder, infer and a tokenizer without sentinels."""

from __future__ import annotations

import signal

import pytest

import test_resume
from conftest import CONFIGS, read_jsonl, run_cli
from test_resume import assert_same_run, finish, kill_after

CONFIG = CONFIGS / "tiny" / "span_corruption.yaml"
QUICK = ["train.per_device_train_batch_size=16", "train.logging_steps=5", "train.eval_steps=20",
         "train.save_steps=20", "data.max_eval_samples=32"]


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


def _mask(length: int, seed: int, density: float = 0.15, mean_span: float = 3.0) -> list[int]:
    from llmkit.data.spans import noise_mask
    from llmkit.objectives.masked_lm import example_generator

    return noise_mask(length, density, mean_span, example_generator(seed, 0, 0)).int().tolist()


def _runs(mask: list[int]) -> list[int]:
    """Lengths of the noise spans."""
    spans, current = [], 0
    for bit in [*mask, 0]:
        if bit:
            current += 1
        elif current:
            spans, current = [*spans, current], 0
    return spans


def test_the_noise_mask_has_t5s_density_and_span_count():
    pinned = [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1]
    assert _mask(30, seed=1, density=0.3) == pinned and _runs(pinned) == [2, 1, 6]  # 9 noise tokens, 3 spans
    for seed in range(20):
        mask = _mask(70, seed)
        assert sum(mask) == 10 and len(_runs(mask)) == 3 and mask[0] == 0  # round(70 * .15), round(10 / 3)
        assert _mask(70, seed) == mask  # a function of (seed, epoch, example)
    assert len({tuple(_mask(70, seed)) for seed in range(20)}) == 20
    assert _mask(1, seed=0) == [0]  # a one-token block (the corpus's last) has no noise


def test_a_hand_made_block_corrupts_to_sentinels_in_order_and_eos():
    import torch

    from llmkit.data.spans import corrupt

    block = torch.arange(10, 20)
    mask = torch.tensor([0, 1, 1, 0, 0, 0, 1, 0, 0, 1], dtype=torch.bool)
    inputs, targets = corrupt(block, mask, sentinel_ids=[100, 99, 98, 97], eos_id=1)
    assert inputs.tolist() == [10, 100, 13, 14, 15, 99, 17, 18, 98, 1]
    assert targets.tolist() == [100, 11, 12, 99, 16, 98, 19, 1]


def test_blocks_are_t5s_inputs_length():
    from llmkit.data.spans import corrupted_lengths, raw_length

    assert raw_length(512, 0.15, 3) == 568 and corrupted_lengths(568, 0.15, 3) == (512, 114)  # T5's numbers
    for max_seq_length in (16, 64, 128, 256):
        assert corrupted_lengths(raw_length(max_seq_length, 0.15, 3), 0.15, 3)[0] == max_seq_length


@pytest.fixture(scope="module")
def objective():
    from llmkit.config import load_config
    from llmkit.objectives import OBJECTIVES

    cfg = load_config(CONFIG, [])
    family = OBJECTIVES[cfg.pretrain.objective]
    tokenizer, train, _ = family.training_data(cfg)
    return family(cfg, tokenizer), train


def test_collated_inputs_are_max_seq_length_with_sentinels_in_order(objective):
    from llmkit.data.spans import sentinel_names

    family, train = objective
    tokenizer = family.tokenizer
    assert tokenizer.convert_ids_to_tokens(family.sentinel_ids) == sentinel_names(100)
    assert len(train[0]["input_ids"]) == 70 and tokenizer.cls_token_id not in train[0]["input_ids"]
    ids = list(range(8))
    batch = family.collate(train[ids], ids, epoch=0)
    assert batch["input_ids"].shape[1] == 64 and bool(batch["attention_mask"].all())
    for inputs, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        labels = [t for t in labels if t != -100]
        used = [t for t in inputs if t in family.sentinel_ids]
        assert used == family.sentinel_ids[:len(used)] == [t for t in labels if t in family.sentinel_ids]
        assert inputs[-1] == labels[-1] == tokenizer.eos_token_id and labels[0] == family.sentinel_ids[0]
        assert len(labels) == 10 + len(used) + 1  # the noise tokens, a sentinel per span, eos
    alone = family.collate(train[[5]], [5], epoch=0)  # an example's noise does not depend on its batch
    assert alone["input_ids"][0].tolist() == batch["input_ids"][5].tolist()
    assert not (family.collate(train[ids], ids, epoch=1)["input_ids"] == batch["input_ids"]).all()


def test_infer_post_processing_fills_each_sentinel_with_its_span(objective):
    family, _ = objective
    tok = family.tokenizer
    s0, s1 = family.sentinel_ids[:2]
    food, great = tok.convert_tokens_to_ids(["food", "great"])
    generated = [s0, food, s1, great, tok.eos_token_id, tok.pad_token_id, s0]  # after eos: ignored
    assert family._filled("the <extra_id_0> was <extra_id_1> .", generated) == {
        "generated": "<extra_id_0> food <extra_id_1> great", "filled": "the food was great ."}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("span") / "run"
    ok(run_cli("pretrain", CONFIG, f"output_dir={out}", "train.max_steps=40", *QUICK))
    return out


def test_the_loss_falls_and_the_folder_loads_as_a_seq2seq_model(trained):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    losses = [line["loss"] for line in read_jsonl(trained / "metrics.jsonl") if "loss" in line]
    evals = [line["eval_loss"] for line in read_jsonl(trained / "metrics.jsonl") if "eval_loss" in line]
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0 and evals[-1] < evals[0]
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSeq2SeqLM.from_pretrained(trained)
    assert tokenizer.convert_tokens_to_ids("<extra_id_99>") == len(tokenizer) - 1 == model.config.vocab_size - 1
    assert tokenizer("the food")["input_ids"][-1] == tokenizer.eos_token_id  # T5-style: text, then eos
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id
    output = model.generate(**tokenizer("the <extra_id_0> was great .", return_tensors="pt"), max_new_tokens=5)
    assert output.shape[1] > 1


def test_evaluate_and_infer(trained):
    import json

    ok(run_cli("evaluate", CONFIG, f"output_dir={trained}", "data.max_eval_samples=32"))
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["num_examples"] == 32 and results["perplexity"] > 1 and results["num_predicted_tokens"] > 32 * 10
    result = ok(run_cli("infer", CONFIG, f"output_dir={trained}", "--input", "-",
                        input="the food was <extra_id_0> .\nthe <extra_id_0> was <extra_id_1> .\n"))
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["text"] for r in rows] == ["the food was <extra_id_0> .", "the <extra_id_0> was <extra_id_1> ."]
    assert all(r["generated"].startswith("<extra_id_0>") and "<extra_id_0>" not in r["filled"] for r in rows)
    result = run_cli("infer", CONFIG, f"output_dir={trained}", "--input", "-", input="no sentinel here\n")
    assert result.exit_code == 2 and "row 1 has no sentinel token" in result.output


def test_resume_after_sigkill_is_bitwise_the_uninterrupted_run(monkeypatch, tmp_path):
    overrides = ["train.max_steps=16", "train.per_device_train_batch_size=8", "train.save_steps=8",
                 "train.eval_steps=8", "train.save_total_limit=null", "data.max_eval_samples=16"]
    monkeypatch.setitem(test_resume.RUNS, "pretrain", (CONFIG, overrides))
    finish(test_resume.llmkit("pretrain", tmp_path / "baseline"))
    out = tmp_path / "run"
    proc = test_resume.llmkit("pretrain", out)
    kill_after(proc, out / "checkpoint-8")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()
    output = finish(test_resume.llmkit("pretrain", out, "train.resume_from_checkpoint=latest"))
    assert "at step 8" in output
    assert_same_run(out, tmp_path / "baseline")


def test_a_tokenizer_without_sentinels_is_one_clear_error(tmp_path):
    from llmkit.config.sections import TokenizerSection
    from llmkit.data.tokenizer import train_tokenizer

    folder = tmp_path / "bert-tokenizer"
    train_tokenizer(TokenizerSection(vocab_size=100), lambda: ["the food was great ."] * 20).save_pretrained(folder)
    result = run_cli("pretrain", CONFIG, f"output_dir={tmp_path / 'out'}", f"tokenizer.name_or_path={folder}")
    assert result.exit_code == 2, result.output
    assert f"tokenizer.name_or_path: the tokenizer of {folder} lacks the sentinel tokens" in result.output
    assert "<extra_id_0> is missing" in result.output and "Traceback" not in result.output


def test_too_many_spans_for_the_sentinels_names_the_key():
    from llmkit.config import load_config
    from llmkit.errors import LlmkitError
    from llmkit.objectives.span_corruption import SpanCorruption

    cfg = load_config(CONFIG, ["data.max_seq_length=1024", "pretrain.mean_noise_span_length=1"])
    with pytest.raises(LlmkitError, match="pretrain.mean_noise_span_length: a block of data.max_seq_length 1024"):
        SpanCorruption(cfg, tokenizer=None)
