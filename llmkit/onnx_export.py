"""A trained run as an ONNX folder (`llmkit export OUTPUT_DIR --format onnx [--quantize int8]`).

    OUTPUT_DIR --load (a PEFT adapter merged)--> torch.onnx.export (the family's onnx_outputs, dynamic batch and
    sequence, and choices for multiple choice) --check every output against torch on a padded batch-->
    [onnxruntime dynamic int8] --> staging --rename--> --to

A family's onnx_graphs says what is written: "logits", one model.onnx; "encoder-decoder" (seq2seq), an encoder
and a decoder with past (llmkit.onnx_seq2seq), checked by generating. The folder holds the graphs, the
tokenizer, config.json (labels) and generation_config.json, the run's config.yaml, onnx.json (what the graphs take
and return) and a README.md saying how to run it with onnxruntime alone. It is built in a staging folder
renamed at the end: a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

from llmkit.errors import LlmkitError
from llmkit.onnx_generate import FILES as SEQ2SEQ_FILES

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
    export, files = GRAPHS[family.onnx_graphs]
    info = {"family": family.__name__, "graphs": family.onnx_graphs, "files": list(files), "inputs": list(inputs),
            "opset": OPSET, "precision": quantize or "fp32", **export(model, inputs, family, folder)}
    if quantize == "int8":
        for name in files:
            quantize_int8(folder / name)
    tokenizer.save_pretrained(folder)
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)
    shutil.copy2(run_dir / "config.yaml", folder / "config.yaml")
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))
    (folder / "README.md").write_text(card(final, run_dir, info, family, cfg.data))
    return info


def _logits_graph(model, inputs: dict, family, folder: Path) -> dict:
    """One model.onnx returning the family's onnx_outputs, checked against torch on the check batch."""
    model.config.use_cache = False  # a causal LM's graph is its logits, without past key values
    names, outputs = list(inputs), list(family.onnx_outputs)
    module = traced(_declared_outputs, model, names, outputs)
    dims = dict(enumerate(family.onnx_input_dims))
    axes = {name: dims for name in names} | {name: dict(enumerate(varying))
                                             for name, varying in family.onnx_outputs.items()}
    trace_graph(module, inputs, outputs, axes, folder / MODEL_FILE)
    return {"outputs": outputs, "input_dims": list(family.onnx_input_dims),
            "max_abs_diff_fp32": graph_difference(module, inputs, folder / MODEL_FILE)}


def _declared_outputs(model, names: list[str], outputs: list[str], *tensors):
    result = model(**dict(zip(names, tensors)))
    return tuple(result[name] for name in outputs)


def _encoder_decoder_graphs(model, inputs: dict, family, folder: Path) -> dict:
    from llmkit.onnx_seq2seq import export_encoder_decoder

    return {"outputs": list(family.onnx_outputs), **export_encoder_decoder(model, inputs, folder)}


# Family.onnx_graphs -> (how its graphs are written, their files)
GRAPHS = {"logits": (_logits_graph, (MODEL_FILE,)), "encoder-decoder": (_encoder_decoder_graphs, SEQ2SEQ_FILES)}


def merged(model):
    """The model itself, or a PEFT adapter folded into its base weights (LoRA); prompt tuning has no weights to
    fold (its virtual tokens are inputs), so it is refused."""
    if not hasattr(model, "peft_config"):
        return model
    if any(c.is_prompt_learning for c in model.peft_config.values()):
        raise LlmkitError("OUTPUT_DIR: a prompt-tuning adapter cannot be merged into the model's weights, so it has "
                          "no ONNX export; export a full, freeze or LoRA fine-tune")
    return model.merge_and_unload()


def traced(forward, model, *args):
    """`forward(model, *args, *tensors)` as the module the exporter traces, positional tensors in, a tuple of
    them out; in eval mode (the exporter restores the wrapper's mode onto the model after tracing)."""
    import torch

    class Traced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return forward(self.model, *args, *tensors)

    return Traced().eval()


def trace_graph(module, feeds: dict, outputs: list[str], axes: dict, path: Path) -> None:
    """torch.onnx.export of `module` on `feeds` (their names are the graph's inputs), `axes` varying."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks it records as constants
        torch.onnx.export(module, tuple(feeds.values()), str(path), input_names=list(feeds), output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def graph_difference(module, feeds: dict, path: Path) -> float:
    """The largest |ONNX - torch| over every output of the graph at `path` on `feeds`: an export is checked
    before it is kept."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    with torch.no_grad():
        reference = module(*feeds.values())
    reference = reference if isinstance(reference, tuple) else (reference,)
    return max(float(np.abs(a - b.float().numpy()).max()) for a, b in zip(ours, reference))


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
    family's input fields) and with onnxruntime and tokenizers alone."""
    fields = list(family.input_fields(data))
    rows = "texts.txt" if fields == ["text"] else f"rows.jsonl  # a JSON object a line: {', '.join(fields)}"
    files = ", ".join(f"`{name}`" for name in info["files"])
    return "\n".join([
        f"# {run_dir.name} (ONNX, {info['precision']})", "",
        f"{files} {'is' if len(info['files']) == 1 else 'are'} llmkit's {info['family']} model from `{run_dir}`, "
        f"exported by `llmkit export` (opset {info['opset']}, {info['precision']}; fp32 agrees with torch to "
        f"{info['max_abs_diff_fp32']:.1e}). {SNIPPETS[info['graphs']][0](info)} The tokenizer and config.json are "
        "beside it.", "",
        "## Usage with llmkit", "",
        "```bash", f"llmkit infer {folder}/config.yaml output_dir={folder} infer.backend=onnxruntime --input {rows}",
        "```", "",
        "## Usage with onnxruntime alone", "",
        "```python", "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", "",
        f'folder = "{folder.resolve()}"',
        'tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")',
        *SNIPPETS[info["graphs"]][1](info, family), "```", "",
    ])


def _logits_summary(info: dict) -> str:
    return (f"It takes {', '.join(info['inputs'])} ([{', '.join(info['input_dims'])}] int64, any sizes) and returns "
            f"{', '.join(info['outputs'])} (labels: config.json's id2label).")


def _logits_snippet(info: dict, family) -> list[str]:
    """The family's onnx_card_batch encoded: a batch of sequences, or with [batch, choices, sequence] inputs one
    row's choices, padded to one length."""
    choices = len(info["input_dims"]) == 3
    feeds = ", ".join(f'"{name}": np.array({"[" * choices}[e.{ENCODING[name]} for e in encodings]{"]" * choices}, '
                      "dtype=np.int64)" for name in info["inputs"])
    outputs = info["outputs"]
    return [f'session = ort.InferenceSession(f"{{folder}}/{MODEL_FILE}")',
            *(["tokenizer.enable_padding()  # the choices to one length; padding is masked out"] if choices else []),
            f"encodings = tokenizer.encode_batch({family.onnx_card_batch})",
            f"{', '.join(outputs)} = session.run(None, {{{feeds}}}){'[0]' * (len(outputs) == 1)}"]


def _generation_summary(info: dict) -> str:
    return (f"The encoder runs once per input; the decoder's first step returns every layer's self- and cross-"
            f"attention keys/values ({info['decoder_layers']} layers), and each next step appends one token's. "
            "onnx.json's `generation` holds the start, end and padding tokens.")


def _generation_snippet(info: dict, family) -> list[str]:
    """A greedy loop over the decoder with past (llmkit's infer also searches by beams and forces tokens)."""
    return [
        "import json", "",
        "encoder, first, step = (ort.InferenceSession(f\"{folder}/{name}\") for name in "
        f"{tuple(info['files'])!r})",
        'tokens = json.load(open(f"{folder}/onnx.json"))["generation"]',
        f"ids = np.array([tokenizer.encode({family.onnx_card_batch}[0]).ids], dtype=np.int64)",
        "mask = np.ones_like(ids)",
        'hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]',
        'start = np.array([[tokens["decoder_start_token_id"]]], dtype=np.int64)',
        'logits, *kv = first.run(None, {"decoder_input_ids": start, "encoder_hidden_states": hidden, '
        '"encoder_attention_mask": mask})',
        "past, cross, generated = kv[:len(kv) // 2], kv[len(kv) // 2:], []",
        "names = [f\"{i // 2}.{('key', 'value')[i % 2]}\" for i in range(len(past))]",
        "for _ in range(32):  # greedy, up to 32 tokens",
        "    token = int(logits[0, -1].argmax())",
        '    if token == tokens["eos_token_id"]:',
        "        break",
        "    generated.append(token)",
        '    feeds = {"decoder_input_ids": np.array([[token]], dtype=np.int64), "encoder_attention_mask": mask,',
        '             **{f"past.{n}": v for n, v in zip(names, past)},',
        '             **{f"cross.{n}": v for n, v in zip(names, cross)}}',
        "    logits, *past = step.run(None, feeds)",
        "text = tokenizer.decode(generated)"]


SNIPPETS = {"logits": (_logits_summary, _logits_snippet), "encoder-decoder": (_generation_summary,
                                                                              _generation_snippet)}


ENCODING = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
