"""A trained run as an ONNX folder (`llmkit export OUTPUT_DIR --format onnx [--quantize int8]`).

    OUTPUT_DIR --load (a PEFT adapter merged)--> torch.onnx.export (the family's onnx_outputs, dynamic batch and
    sequence, and choices for multiple choice) --check every output against torch on a padded batch-->
    [onnxruntime dynamic int8] --> staging --rename--> --to

The folder holds model.onnx, the tokenizer, config.json (labels), the run's config.yaml, onnx.json (what the graph
takes and returns) and a README.md saying how to run it with onnxruntime alone. It is built in a staging folder
renamed at the end: a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

from llmkit.errors import LlmkitError

MODEL_FILE, INFO_FILE = "model.onnx", "onnx.json"
OPSET = 17
CHECK_LINES = ("the food was great and the service was friendly and quick", "ok")  # a padded check batch


def export_onnx(run_dir: Path, to: Path | None, quantize: str | None) -> tuple[Path, dict]:
    """Write the ONNX folder of the run in `run_dir` (default: run_dir/onnx); returns it and its onnx.json."""
    family, cfg = _family(run_dir)
    to = to or run_dir / "onnx"
    if to.exists() and not (to / INFO_FILE).exists() and any(to.iterdir()):
        raise LlmkitError(f"--to: {to} holds files and no earlier ONNX export; pick an empty or new folder")
    staging = to.with_name(f".{to.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        info = _write(run_dir, staging, to, family, cfg, quantize)
        _replace(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return to, info


def _family(run_dir: Path):
    from llmkit.config import load_config
    from llmkit.objectives import OBJECTIVES, TASKS, family_of

    if not (run_dir / "config.yaml").exists():
        raise LlmkitError(f"OUTPUT_DIR: {run_dir} holds no config.yaml; export takes a folder llmkit trained")
    cfg = load_config(run_dir / "config.yaml")
    if len(cfg.task_configs()) > 1:
        raise LlmkitError("OUTPUT_DIR: a multi-task run has one head per task; export takes a single-task run")
    family = family_of(cfg)
    if family.onnx_outputs is None:
        exported = [name for name, each in {**TASKS, **OBJECTIVES}.items() if each.onnx_outputs is not None]
        raise LlmkitError(f"--format onnx: {family.__name__} declares no ONNX graph (onnx_outputs) yet; exported are "
                          f"{', '.join(exported)}")
    return family, cfg


def _write(run_dir: Path, folder: Path, final: Path, family, cfg, quantize: str | None) -> dict:
    from llmkit.data.tokenizer import load_tokenizer
    from llmkit.modeling import load_trained

    model = merged(load_trained(str(run_dir), family.predict_kind or family.model_kind, "OUTPUT_DIR",
                                cfg.model.trust_remote_code)).eval()
    tokenizer = load_tokenizer(str(run_dir), "OUTPUT_DIR")
    inputs = family.with_model_config(cfg, tokenizer, model.config.to_dict()).export_inputs(list(CHECK_LINES))
    _export(model, inputs, family, folder / MODEL_FILE)
    info = {"family": family.__name__, "inputs": list(inputs), "outputs": list(family.onnx_outputs),
            "input_dims": list(family.onnx_input_dims), "opset": OPSET, "precision": quantize or "fp32",
            "max_abs_diff_fp32": max_difference(model, inputs, list(family.onnx_outputs), folder / MODEL_FILE)}
    if quantize == "int8":
        quantize_int8(folder / MODEL_FILE)
    tokenizer.save_pretrained(folder)
    model.config.save_pretrained(folder)
    shutil.copy2(run_dir / "config.yaml", folder / "config.yaml")
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))
    (folder / "README.md").write_text(card(final, run_dir, info, family, cfg.data))
    return info


def merged(model):
    """The model itself, or a PEFT adapter folded into its base weights (LoRA); prompt tuning has no weights to
    fold (its virtual tokens are inputs), so it is refused."""
    if not hasattr(model, "peft_config"):
        return model
    if any(c.is_prompt_learning for c in model.peft_config.values()):
        raise LlmkitError("OUTPUT_DIR: a prompt-tuning adapter cannot be merged into the model's weights, so it has "
                          "no ONNX export; export a full, freeze or LoRA fine-tune")
    return model.merge_and_unload()


def _traced(model, names: list[str], outputs: list[str]):
    """The model as the exporter traces it: positional inputs in the order of `names`, the declared outputs out."""
    import torch

    class DeclaredOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            result = self.model(**dict(zip(names, tensors)))
            return tuple(result[name] for name in outputs)

    return DeclaredOutputs().eval()  # the exporter restores the wrapper's mode onto the model after tracing


def _export(model, inputs: dict, family, path: Path) -> None:
    import torch

    model.config.use_cache = False  # a causal LM's graph is its logits, without past key values
    dims = dict(enumerate(family.onnx_input_dims))
    axes = {name: dims for name in inputs} | {name: dict(enumerate(varying))
                                               for name, varying in family.onnx_outputs.items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks it records as constants
        torch.onnx.export(_traced(model, list(inputs), list(family.onnx_outputs)), tuple(inputs.values()),
                          str(path), input_names=list(inputs), output_names=list(family.onnx_outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def max_difference(model, inputs: dict, outputs: list[str], path: Path) -> float:
    """The largest |ONNX - torch| over the outputs on `inputs`: the export is checked before it is kept."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx = session.run(outputs, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        reference = model(**inputs)
    return max(float(np.abs(ours - reference[name].float().numpy()).max()) for name, ours in zip(outputs, onnx))


def quantize_int8(path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization, per output channel, in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("model_fp32.onnx")
    path.rename(fp32)
    logging.disable(logging.WARNING)  # its advice to run shape pre-processing first, which dynamic int8 needs not
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


def _replace(staging: Path, to: Path) -> None:
    """`to` becomes the staging folder; an earlier export there goes only once the new one is in place."""
    old = to.with_name(f".{to.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if to.exists():
        to.rename(old)
    staging.rename(to)
    shutil.rmtree(old, ignore_errors=True)


def card(folder: Path, run_dir: Path, info: dict, family, data) -> str:
    """README.md: what the folder holds and how to run it with llmkit (on lines of text, or JSON lines of the
    family's input fields) and with onnxruntime and tokenizers alone. The snippet encodes the family's onnx_card_batch: a batch of
    sequences, or with [batch, choices, sequence] inputs one row's choices, padded to one length."""
    fields = list(family.input_fields(data))
    rows = "texts.txt" if fields == ["text"] else f"rows.jsonl  # a JSON object a line: {', '.join(fields)}"
    choices = len(info["input_dims"]) == 3
    feeds = ", ".join(f'"{name}": np.array({"[" * choices}[e.{ENCODING[name]} for e in encodings]{"]" * choices}, '
                      "dtype=np.int64)" for name in info["inputs"])
    outputs = info["outputs"]
    return "\n".join([
        f"# {run_dir.name} (ONNX, {info['precision']})", "",
        f"`{MODEL_FILE}` is llmkit's {info['family']} model from `{run_dir}`, exported by `llmkit export` "
        f"(opset {info['opset']}, {info['precision']}; fp32 agrees with torch to {info['max_abs_diff_fp32']:.1e}). "
        f"It takes {', '.join(info['inputs'])} ([{', '.join(info['input_dims'])}] int64, any sizes) and returns "
        f"{', '.join(info['outputs'])}. The tokenizer and config.json (labels: id2label) are beside it.", "",
        "## Usage with llmkit", "",
        "```bash", f"llmkit infer {folder}/config.yaml output_dir={folder} infer.backend=onnxruntime --input {rows}",
        "```", "",
        "## Usage with onnxruntime alone", "",
        "```python", "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", "",
        f'folder = "{folder.resolve()}"',
        'tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")',
        f'session = ort.InferenceSession(f"{{folder}}/{MODEL_FILE}")',
        *(["tokenizer.enable_padding()  # the choices to one length; padding is masked out"] if choices else []),
        f"encodings = tokenizer.encode_batch({family.onnx_card_batch})",
        f"{', '.join(outputs)} = session.run(None, {{{feeds}}}){'[0]' * (len(outputs) == 1)}", "```", "",
    ])


ENCODING = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
