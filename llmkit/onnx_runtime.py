"""`infer.backend: onnxruntime`: a folder `llmkit export --format onnx` wrote, run by ONNX Runtime without torch.

The family's own `predict` runs as on torch (the same length-sorted batches, numpy padding, post-processing and
JSON rows); only the forward differs, and it returns every output the graph declares (question answering's
start and end logits) by name, as TorchLogits does. An encoder-decoder export generates instead
(llmkit.onnx_generate.OnnxSeq2Seq, as TorchGenerator). Nothing here imports torch, transformers' model code or
accelerate: the tokenizer is the folder's tokenizer.json, loaded by the tokenizers backend, and the labels are
read from config.json as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmkit.errors import LlmkitError
from llmkit.objectives.base import Family, PredictRun, token_logits
from llmkit.onnx_export import INFO_FILE, MODEL_FILE
from llmkit.onnx_generate import OnnxSeq2Seq


class OnnxLogits:
    """An exported model as Family.predict calls it (as TorchLogits): numpy inputs in, every declared output out by
    name, at `positions` of the input's own tokens when given."""

    def __init__(self, folder: Path, info: dict):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
        self.names, self.outputs = info["inputs"], info["outputs"]

    def __call__(self, inputs: dict[str, np.ndarray], positions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        arrays = self.session.run(self.outputs, {name: inputs[name] for name in self.names})
        if positions is not None:
            arrays = [token_logits(v, inputs["input_ids"])[positions] for v in arrays]
        return dict(zip(self.outputs, arrays))


def onnx_loader(cfg, family: type[Family]):
    """Checks the exported folder (output_dir) and loads its tokenizer now, so that its problems come first;
    returns (batch_size, top_k) -> infer's function from a chunk of examples to their JSON rows."""
    folder = Path(cfg.output_dir)
    if not (folder / INFO_FILE).exists():
        raise LlmkitError(f"output_dir: {folder} holds no {INFO_FILE} (infer.backend: onnxruntime runs a folder "
                          "that `llmkit export RUN_DIR --format onnx` wrote)")
    info = json.loads((folder / INFO_FILE).read_text())
    if info["family"] != family.__name__:
        raise LlmkitError(f"output_dir: {folder} holds a {info['family']} export, but the config predicts with "
                          f"{family.__name__}")
    graphs = info.get("graphs", "logits")
    if family.generates and graphs == "logits":
        raise LlmkitError(f"infer.backend: {family.__name__} generates text with the torch model, not from an ONNX "
                          "graph's logits; use infer.backend: torch")
    missing = [name for name in info.get("files", [MODEL_FILE]) if not (folder / name).exists()]
    if missing:
        raise LlmkitError(f"output_dir: {folder} lacks {missing[0]}, which its {INFO_FILE} names; export it again")
    tokenizer = load_tokenizer(folder, info["inputs"])
    predictor = family.with_model_config(cfg, tokenizer, json.loads((folder / "config.json").read_text()))

    def load(batch_size: int, top_k: int):
        model, run = RUNTIMES[graphs](folder, info), PredictRun(None, batch_size, top_k)
        return lambda examples: predictor.predict(model, examples, run)

    return load


RUNTIMES = {"logits": OnnxLogits, "encoder-decoder": OnnxSeq2Seq}  # onnx.json's graphs -> what runs them


def load_tokenizer(folder: Path, inputs: list[str]):
    """The folder's tokenizer without torch (AutoTokenizer imports it through the model config's code),
    returning the inputs the graph takes (token_type_ids included when it takes them)."""
    from transformers import PreTrainedTokenizerFast

    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    except Exception as e:
        raise LlmkitError(f"output_dir: cannot load the tokenizer of {folder}: {type(e).__name__}: {e}") from None
    tokenizer.model_input_names = inputs
    return tokenizer
