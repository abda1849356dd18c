"""`llmkit export --format onnx` and `infer.backend: onnxruntime`: for each exportable family a tiny model (hidden 32,
one layer) is exported at one shape and run at others; ONNX fp32 outputs (each of them: question answering's start
and end logits) agree with torch's within 1e-4, int8 agrees on the argmax mostly, the card's snippet runs, and ONNX
Runtime's `infer` writes torch's rows without importing torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIGS, REPO, read_jsonl, run_cli

WORDS = "the food was great awful service slow friendly ok never again quick and good bad".split()
TAGS = ["O", "B-FOOD", "I-FOOD"]
RUNS = {  # family: (tiny config, overrides, Auto class, labels)
    "sequence_classification": ("finetune", ["finetune.task=sequence_classification"],
                                "AutoModelForSequenceClassification", ["negative", "positive"]),
    "regression": ("finetune", ["finetune.task=regression"], "AutoModelForSequenceClassification", ["score"]),
    "multi_label_classification": ("finetune", ["finetune.task=multi_label_classification"],
                                   "AutoModelForSequenceClassification", ["a", "b", "c"]),
    "token_classification": ("finetune", ["finetune.task=token_classification"], "AutoModelForTokenClassification",
                             TAGS),
    "question_answering": ("question_answering", [], "AutoModelForQuestionAnswering", ["start", "end"]),
    "multiple_choice": ("multiple_choice", [], "AutoModelForMultipleChoice", ["0", "1", "2", "3"]),
    "mlm": ("pretrain", [], "AutoModelForMaskedLM", None),
    "clm": ("clm", [], "AutoModelForCausalLM", None),
}


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids",
                                   "token_type_ids", "attention_mask"])


def make_run(folder: Path, family: str) -> Path:
    """A run folder as llmkit leaves one: config.yaml, a tiny seeded model with its labels, the tokenizer."""
    import torch
    import transformers

    from llmkit.config import load_config, save_config

    base, overrides, auto, labels = RUNS[family]
    cfg = load_config(CONFIGS / "tiny" / f"{base}.yaml", [f"output_dir={folder}", *overrides])
    save_config(cfg, folder / "config.yaml")
    tokenizer = _tokenizer()
    model_type = "gpt2" if family == "clm" else "bert"
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, n_embd=32, n_layer=1, n_head=2, max_position_embeddings=64, n_positions=64,
        bos_token_id=3, eos_token_id=3,
        **({"id2label": dict(enumerate(labels))} if labels else {}))
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(config)
    with torch.no_grad():  # margins wider than int8's rounding, so the argmax means something
        for name, weight in model.named_parameters():
            if name.endswith(("classifier.weight", "qa_outputs.weight", "decoder.weight", "lm_head.weight")):
                weight.mul_(20)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {family: make_run(root / family, family) for family in RUNS}


def _batch(rng, shape: tuple[int, ...], vocab: int) -> dict:
    """Random ids of ragged lengths (padding masked out), with a second segment in token_type_ids; `shape`:
    (batch, length), or (batch, choices, length) for multiple choice."""
    rows, length = int(np.prod(shape[:-1])), shape[-1]
    lengths = rng.integers(2, length + 1, rows)
    lengths[0] = length
    ids = rng.integers(5, vocab, (rows, length))
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    batch = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": (np.arange(length)[None] > 3) * mask}
    return {k: v.reshape(shape) for k, v in batch.items()}


def _logits(run: Path, onnx_folder: Path, shapes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(torch, ONNX) of every declared output at each shape of `shapes`; per-token outputs at real tokens only
    (a score per token: padding's set to -1e4 in both, so a row's argmax is its best real token)."""
    import onnxruntime
    import torch
    import transformers

    from llmkit.config import load_config
    from llmkit.objectives import family_of

    info = json.loads((onnx_folder / "onnx.json").read_text())
    per_token = {name: "sequence" in dims
                 for name, dims in family_of(load_config(run / "config.yaml")).onnx_outputs.items()}
    model = getattr(transformers, RUNS[run.name][2]).from_pretrained(run).eval()
    session = onnxruntime.InferenceSession(str(onnx_folder / "model.onnx"))
    rng, pairs = np.random.default_rng(0), []
    for shape in shapes:
        inputs = {k: v for k, v in _batch(rng, shape, model.config.vocab_size).items() if k in info["inputs"]}
        with torch.no_grad():
            reference = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        real = inputs["attention_mask"].astype(bool)
        for name, onnx in zip(info["outputs"], session.run(None, inputs)):
            ours = reference[name].numpy()
            if per_token[name] and ours.ndim == real.ndim:
                pairs.append((np.where(real, ours, -1e4), np.where(real, onnx, -1e4)))
            else:
                pairs.append((ours[real], onnx[real]) if per_token[name] else (ours, onnx))
    return pairs


def _export(run: Path, to: Path, *options: str):
    result = run_cli("export", run, "--format", "onnx", "--to", to, *options)
    assert result.exit_code == 0, result.output
    return result


SHAPES = [(1, 3), (2, 7), (5, 16), (3, 40)]  # exported at (2, 12): other batch sizes and lengths run
CHOICE_SHAPES = [(1, 2, 3), (2, 3, 7), (3, 5, 16), (2, 4, 40)]  # exported at (2, 4 choices, 12)


def _shapes(family: str):
    return CHOICE_SHAPES if family == "multiple_choice" else SHAPES


def _card_outputs(folder: Path) -> dict:
    """What the card's onnxruntime-only snippet leaves: its outputs by name."""
    snippet = re.search(r"## Usage with onnxruntime alone\n\n```python\n(.*?)```", (folder / "README.md").read_text(),
                        re.S).group(1)
    namespace = {}
    exec(snippet, namespace)
    return {name: namespace[name] for name in json.loads((folder / "onnx.json").read_text())["outputs"]}


@pytest.mark.parametrize("family", RUNS)
def test_onnx_fp32_logits_match_torch_at_every_shape(runs, family, tmp_path):
    result = _export(runs[family], tmp_path / "onnx")
    assert "fp32 matches torch" in result.output
    for reference, onnx in _logits(runs[family], tmp_path / "onnx", _shapes(family)):
        assert reference.shape == onnx.shape
        assert np.abs(reference - onnx).max() < 1e-4
    folder = tmp_path / "onnx"
    assert {"model.onnx", "tokenizer.json", "config.json", "config.yaml", "README.md", "onnx.json"} <= \
        {p.name for p in folder.iterdir()}
    outputs = _card_outputs(folder)  # one example (one row of choices), every output
    assert all(v.shape[0] == 1 for v in outputs.values())
    assert family != "multiple_choice" or outputs["logits"].shape == (1, 2)


@pytest.mark.parametrize("family", ["sequence_classification", "token_classification", "question_answering",
                                    "multiple_choice", "mlm"])
def test_int8_runs_smaller_and_mostly_agrees_on_the_argmax(runs, family, tmp_path):
    _export(runs[family], tmp_path / "fp32")
    _export(runs[family], tmp_path / "int8", "--quantize", "int8")
    assert json.loads((tmp_path / "int8" / "onnx.json").read_text())["precision"] == "int8"
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < (tmp_path / "fp32" / "model.onnx").stat().st_size
    pairs = _logits(runs[family], tmp_path / "int8", _shapes(family))
    agree = np.mean(np.concatenate([(r.argmax(-1) == o.argmax(-1)).ravel() for r, o in pairs]))
    assert agree >= 0.8, agree


def _infer(run: Path, folder: Path, inputs: Path, out: Path, *overrides: str) -> list[dict]:
    """`llmkit infer` of the run's config on `folder` (the run, or its export), two inputs per batch."""
    base, task = RUNS[run.name][:2]
    result = run_cli("infer", CONFIGS / "tiny" / f"{base}.yaml", f"output_dir={folder}", *task,
                     *overrides, "--input", inputs, "--output", out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    return read_jsonl(out)


def _close(a, b) -> None:
    """Rows equal, floats within 1e-5."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-5)
    else:
        assert a == b


CONTEXT = "the food was great and the service was friendly , but the soup was slow and never quick ."


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


INPUTS = {  # family: (input file, its lines)
    "token_classification": ("in.txt", "the food was great\nok\nservice was slow and never quick\n"),
    "mlm": ("in.txt", "the food was [MASK]\n[MASK] service was [MASK] and slow\n"),
    "question_answering": ("in.jsonl", _jsonl([  # windows of max_seq_length 32: the long contexts have several
        {"question": "what was slow ?", "context": CONTEXT}, {"question": "what was great", "context": "the food"},
        {"question": "was the service friendly", "context": f"{CONTEXT} {CONTEXT} {CONTEXT}"}])),
    "multiple_choice": ("in.jsonl", _jsonl([
        {"context": context, "question": "was it", "answer0": "good", "answer1": "bad food", "answer2": "ok",
         "answer3": "slow and never quick again"} for context in ("the food was great", "awful service", CONTEXT)])),
}
TEXTS = ("in.txt", "the food was great\nok\nawful service , never again and slow\ngood\nbad food\n")


@pytest.mark.parametrize("family", ["sequence_classification", "regression", "multi_label_classification",
                                    "token_classification", "question_answering", "multiple_choice", "mlm"])
def test_onnxruntime_infer_writes_torchs_rows(runs, family, tmp_path):
    _export(runs[family], tmp_path / "onnx")
    name, lines = INPUTS.get(family, TEXTS)
    (tmp_path / name).write_text(lines)
    torch_rows = _infer(runs[family], runs[family], tmp_path / name, tmp_path / "torch.jsonl")
    onnx_rows = _infer(runs[family], tmp_path / "onnx", tmp_path / name, tmp_path / "onnx.jsonl",
                       "infer.backend=onnxruntime")
    assert len(onnx_rows) == len(lines.splitlines())
    _close(torch_rows, onnx_rows)


NO_TORCH = """import sys
from llmkit.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print("imported:", sorted(m for m in ("torch", "accelerate") if m in sys.modules))
"""


@pytest.mark.parametrize("family", ["sequence_classification", "question_answering", "multiple_choice"])
def test_onnxruntime_infer_never_imports_torch(runs, family, tmp_path):
    """The CLI's own main, in a fresh process: afterwards neither torch nor accelerate is in sys.modules."""
    _export(runs[family], tmp_path / "onnx")
    name, lines = INPUTS.get(family, TEXTS)
    (tmp_path / name).write_text(lines)
    base, task = RUNS[family][:2]
    args = ["infer", CONFIGS / "tiny" / f"{base}.yaml", f"output_dir={tmp_path / 'onnx'}", *task,
            "infer.backend=onnxruntime", "--input", tmp_path / name, "--output", tmp_path / "p.jsonl"]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported: []" in result.stdout
    assert len(read_jsonl(tmp_path / "p.jsonl")) == len(lines.splitlines())


def test_refusals_are_one_line(runs, tmp_path):
    _export(runs["clm"], tmp_path / "clm")
    generating = run_cli("infer", CONFIGS / "tiny" / "clm.yaml", f"output_dir={tmp_path / 'clm'}",
                         "infer.backend=onnxruntime", "--input", "-", input="the food\n")
    assert generating.exit_code == 2 and "CausalLM generates text with the torch model" in generating.output
    no_export = run_cli("infer", CONFIGS / "tiny" / "finetune.yaml", f"output_dir={runs['regression']}",
                        "infer.backend=onnxruntime", "--input", "-", input="ok\n")
    assert no_export.exit_code == 2 and f"output_dir: {runs['regression']} holds no onnx.json" in no_export.output
    contrastive = tmp_path / "contrastive"
    contrastive.mkdir()
    (contrastive / "config.yaml").write_text((runs["mlm"] / "config.yaml").read_text().replace(
        "objective: mlm", "objective: contrastive"))
    refused = run_cli("export", contrastive, "--format", "onnx")
    assert refused.exit_code == 2 and "Contrastive declares no ONNX graph (onnx_outputs)" in refused.output
    assert run_cli("export", runs["mlm"], "--format", "tflite").exit_code == 2


def test_a_failed_export_leaves_nothing_and_a_new_one_replaces_the_old(runs, tmp_path, monkeypatch):
    import llmkit.onnx_export

    run, to = runs["sequence_classification"], tmp_path / "onnx"
    monkeypatch.setattr(llmkit.onnx_export, "quantize_int8", lambda path: 1 / 0)
    assert run_cli("export", run, "--format", "onnx", "--to", to, "--quantize", "int8").exit_code != 0
    assert list(tmp_path.iterdir()) == []
    _export(run, to)
    (to / "stale").write_text("from the last export")
    _export(run, to)
    assert not (to / "stale").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    clash = run_cli("export", run, "--format", "onnx", "--to", tmp_path / "other")
    assert clash.exit_code == 2 and "holds files and no earlier ONNX export" in clash.output


def test_a_lora_adapter_is_merged_and_prompt_tuning_refused(runs):
    import torch
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from llmkit.errors import LlmkitError
    from llmkit.onnx_export import merged

    def model():
        return AutoModelForSequenceClassification.from_pretrained(runs["sequence_classification"]).eval()

    lora = get_peft_model(model(), LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"],
                                              init_lora_weights=False)).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
        plain = merged(lora)
        assert not hasattr(plain, "peft_config")
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)
    prompt = get_peft_model(model(), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    with pytest.raises(LlmkitError, match="prompt-tuning adapter cannot be merged"):
        merged(prompt)
