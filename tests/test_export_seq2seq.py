"""`llmkit export` of a seq2seq run (an encoder, a decoder and a decoder with past) and its generation on ONNX
Runtime: on a tiny T5, BART and BERT2BERT, greedy and beam search give model.generate()'s tokens exactly at
other batch sizes and lengths than the export traced, `infer` writes torch's rows without importing torch, the
card's onnxruntime-only loop translates, int8 runs, and generation settings the search lacks are refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, REPO, read_jsonl, run_cli
from test_export import NO_TORCH
from test_seq2seq import SEQ2SEQ, make_tiny_bert, ok

SEARCHES = [(1, 1.0), (2, 1.0), (3, 0.6), (4, 2.0)]  # (num_beams, length_penalty)
LINES = "three one\nfour two five\nnine\nzero zero seven one two\n"


BART = {"model_type": "bart", "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A T5 and a BART from scratch (BART forces its end token at the last position) and a BERT2BERT warm-started
    from a tiny BERT, each trained a few steps on the digits."""
    root = tmp_path_factory.mktemp("seq2seq-runs")
    short = ["train.eval_strategy=no", "train.save_strategy=no", "train.learning_rate=1e-2", "train.max_steps=25"]
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={root / 't5'}", *short))
    bart = yaml.safe_load(SEQ2SEQ.read_text()) | {"model": {"config": BART}}
    (root / "bart.yaml").write_text(yaml.safe_dump(bart))
    ok(run_cli("finetune", root / "bart.yaml", f"output_dir={root / 'bart'}", *short))
    bert = make_tiny_bert(root / "bert")
    ok(run_cli("finetune", SEQ2SEQ, f"output_dir={root / 'bert2bert'}", f"model.name_or_path={bert}",
               "model.config=null", "model.encoder_decoder=true", *short))
    return {"t5": root / "t5", "bart": root / "bart", "bert2bert": root / "bert2bert"}


def _export(run: Path, to: Path, *options: str) -> dict:
    result = run_cli("export", run, "--format", "onnx", "--to", to, *options)
    assert result.exit_code == 0, result.output
    return json.loads((to / "onnx.json").read_text())


def _batches(vocab: int, special: int):
    """Random sources of ragged lengths (padding masked out), at sizes the export did not trace."""
    rng = np.random.default_rng(0)
    for rows, length in [(1, 3), (3, 9), (5, 17)]:
        lengths = rng.integers(2, length + 1, rows)
        lengths[0] = length
        mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
        yield rng.integers(special, vocab, (rows, length)) * mask, mask


@pytest.mark.parametrize("kind", ["t5", "bart", "bert2bert"])
def test_onnx_generation_is_torchs_token_for_token(runs, kind, tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from llmkit.onnx_generate import OnnxSeq2Seq

    info = _export(runs[kind], tmp_path / "onnx")
    assert info["max_abs_diff_fp32"] < 1e-4 and info["graphs"] == "encoder-decoder"
    assert {"encoder.onnx", "decoder.onnx", "decoder_with_past.onnx", "generation_config.json", "tokenizer.json"} <= \
        {p.name for p in (tmp_path / "onnx").iterdir()}
    model = AutoModelForSeq2SeqLM.from_pretrained(runs[kind]).eval()
    onnx = OnnxSeq2Seq(tmp_path / "onnx", info)
    lengths = set()
    if kind == "bart":  # where max_new_tokens cuts a generation, the end token forced is the tokenizer's
        assert model.generation_config.forced_eos_token_id == model.config.eos_token_id
    for ids, mask in _batches(model.get_encoder().get_input_embeddings().num_embeddings, 5):
        for beams, penalty in SEARCHES:
            search = {"num_beams": beams, "max_new_tokens": 12, **({"length_penalty": penalty} if beams > 1 else {})}
            with torch.no_grad():
                expected = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                          do_sample=False, **search).numpy()
            ours = onnx.generate(ids, mask, **search)
            assert ours.shape == expected.shape and (ours == expected).all(), (beams, penalty, ours, expected)
            lengths.add(ours.shape[1])
    assert len(lengths) > 1  # some searches ended before max_new_tokens: end tokens were generated and handled


@pytest.mark.parametrize("beams", [1, 3])
def test_onnxruntime_infer_writes_torchs_rows(runs, beams, tmp_path):
    _export(runs["t5"], tmp_path / "onnx")
    (tmp_path / "in.txt").write_text(LINES)
    rows = {}
    for backend, folder in (("torch", runs["t5"]), ("onnxruntime", tmp_path / "onnx")):
        result = run_cli("infer", SEQ2SEQ, f"output_dir={folder}", f"infer.backend={backend}",
                         f"finetune.seq2seq.num_beams={beams}", "--input", tmp_path / "in.txt",
                         "--output", tmp_path / f"{backend}.jsonl", "--batch-size", "3")
        assert result.exit_code == 0, result.output
        rows[backend] = read_jsonl(tmp_path / f"{backend}.jsonl")
    assert rows["onnxruntime"] == rows["torch"] and len(rows["torch"]) == len(LINES.splitlines())


def test_onnxruntime_generation_never_imports_torch(runs, tmp_path):
    _export(runs["bert2bert"], tmp_path / "onnx")
    (tmp_path / "in.txt").write_text(LINES)
    args = ["infer", SEQ2SEQ, f"output_dir={tmp_path / 'onnx'}", "infer.backend=onnxruntime",
            "--input", tmp_path / "in.txt", "--output", tmp_path / "p.jsonl"]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported: []" in result.stdout
    assert [row["text"] for row in read_jsonl(tmp_path / "p.jsonl")] == LINES.splitlines()


def test_the_cards_loop_translates_as_greedy_infer_does(runs, tmp_path):
    folder = tmp_path / "onnx"
    _export(runs["t5"], folder)
    snippet = re.search(r"## Usage with onnxruntime alone\n\n```python\n(.*?)```", (folder / "README.md").read_text(),
                        re.S).group(1)
    namespace = {}
    exec(snippet, namespace)
    (tmp_path / "in.txt").write_text("a man is riding a bike .\n")
    ok(run_cli("infer", SEQ2SEQ, f"output_dir={folder}", "infer.backend=onnxruntime",
               "finetune.seq2seq.max_new_tokens=32", "--input", tmp_path / "in.txt", "--output", tmp_path / "p.jsonl"))
    assert namespace["text"].strip() == read_jsonl(tmp_path / "p.jsonl")[0]["generated"]


def test_int8_export_is_smaller_and_generates(runs, tmp_path):
    _export(runs["t5"], tmp_path / "fp32")
    info = _export(runs["t5"], tmp_path / "int8", "--quantize", "int8")
    assert info["precision"] == "int8"
    for name in info["files"]:
        assert (tmp_path / "int8" / name).stat().st_size < (tmp_path / "fp32" / name).stat().st_size
    (tmp_path / "in.txt").write_text(LINES)
    ok(run_cli("infer", SEQ2SEQ, f"output_dir={tmp_path / 'int8'}", "infer.backend=onnxruntime",
               "--input", tmp_path / "in.txt", "--output", tmp_path / "p.jsonl"))
    assert len(read_jsonl(tmp_path / "p.jsonl")) == len(LINES.splitlines())


def test_generation_settings_it_cannot_honour_are_refused(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["t5"], run)
    settings = json.loads((run / "generation_config.json").read_text())
    (run / "generation_config.json").write_text(json.dumps({**settings, "no_repeat_ngram_size": 2}))
    refused = run_cli("export", run, "--format", "onnx")
    assert refused.exit_code == 2
    assert "generation_config.json sets no_repeat_ngram_size, which the ONNX generation does not honour" in \
        refused.output
    assert not (run / "onnx").exists()
    missing = tmp_path / "half"
    _export(runs["t5"], missing)
    (missing / "decoder_with_past.onnx").unlink()
    broken = run_cli("infer", CONFIGS / "tiny" / "seq2seq.yaml", f"output_dir={missing}", "infer.backend=onnxruntime",
                     "--input", "-", input="nine\n")
    assert broken.exit_code == 2 and "lacks decoder_with_past.onnx" in broken.output
