"""`llmkit infer CONFIG --input FILE|- [--output preds.jsonl]`: predictions as JSON lines, in input order.

    llmkit infer configs/tiny/finetune.yaml --input texts.txt --output preds.jsonl
    echo "the food was [MASK] ." | llmkit infer configs/tiny/pretrain.yaml --input -

One line per input, as the objective or task predicts (llmkit.objectives): classification {text, label,
score, scores}; regression {text, score}; multi-label {text, labels, scores}; token classification
{tokens, tags} (a .txt line is split on whitespace into words); masked LM {text, predictions} with the
top-k fillers of each mask token; causal LM {text, generated}; contrastive and infer.task `embed`:
{text, embedding} (or one .npy array); `zero_shot`: {text, label, score, scores}. The input is read and
written a chunk at a time, so memory does not grow with it; within a chunk, inputs are batched by length.
With infer.backend=onnxruntime, output_dir is a folder `llmkit export --format onnx` wrote, run by ONNX Runtime
without importing torch (llmkit.onnx_runtime); the rows are the same.
"""

from __future__ import annotations

import itertools

from llmkit.config import Config
from llmkit.data.inputs import input_chunks
from llmkit.data.outputs import EmbeddingArray, JsonLines
from llmkit.errors import LlmkitError
from llmkit.objectives import family_of
from llmkit.objectives.base import PredictRun

CHUNK_EXAMPLES = 8192  # examples read, predicted and written at a time; batches are sorted by length within one


def run(cfg: Config, input_path: str, output_path: str | None, batch_size: int, top_k: int,
        task_name: str | None = None) -> int:
    cfg = _task_config(cfg, task_name)
    family = family_of(cfg)
    if cfg.infer.backend == "onnxruntime":  # never imports torch: start-up is a fraction of torch's
        from llmkit.onnx_runtime import onnx_loader

        load = onnx_loader(cfg, family)
    else:
        load = _torch_loader(cfg, family)
    chunks = input_chunks(input_path, family, cfg.data, CHUNK_EXAMPLES)
    first = next(chunks)  # a missing or unreadable input is reported before any model is loaded
    predict = load(batch_size, top_k)
    sink = EmbeddingArray(output_path) if output_path and output_path.endswith(".npy") else JsonLines(output_path)
    try:
        for chunk in itertools.chain([first], chunks):
            sink.write(predict(chunk))
        return sink.close()
    finally:
        sink.discard()


def _torch_loader(cfg: Config, family):
    """The accelerator, model source and tokenizer now (their problems first); the model once called."""
    from llmkit.data.tokenizer import load_tokenizer
    from llmkit.stages.common import make_accelerator, trained_model_source

    accelerator = make_accelerator(cfg)
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    return lambda batch_size, top_k: family.predictor(cfg, source, tokenizer,
                                                      PredictRun(accelerator, batch_size, top_k))


def _task_config(cfg: Config, name: str | None) -> Config:
    """The config of the task to run: a multi-task config's task is picked with --task."""
    configs = cfg.task_configs()
    if name is None and None not in configs:
        raise LlmkitError(f"--task: this config fine-tunes several tasks ({', '.join(configs)}); pick one")
    if name is not None and name not in configs:
        if None in configs:
            raise LlmkitError("--task: this config fine-tunes one task; leave --task out")
        raise LlmkitError(f"--task: no task {name!r} here; the tasks are {', '.join(configs)}")
    return configs[name]
