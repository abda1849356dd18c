"""`llmkit infer CONFIG --input FILE|- [--output preds.jsonl]`: predictions as JSON lines, in input order.

    llmkit infer configs/tiny/finetune.yaml --input texts.txt --output preds.jsonl
    echo "the food was [MASK] ." | llmkit infer configs/tiny/pretrain.yaml --input -

One line per input, as the objective or task predicts (llmkit.objectives): classification {text, label,
score, scores}; regression {text, score}; multi-label {text, labels, scores}; token classification
{tokens, tags} (a .txt line is split on whitespace into words); masked LM {text, predictions} with the
top-k fillers of each mask token; causal LM {text, generated}; contrastive and infer.task `embed`:
{text, embedding} (or one .npy array); `zero_shot`: {text, label, score, scores}. The input is read and
written a chunk at a time, so memory does not grow with it; within a chunk, inputs are batched by length.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

from llmkit.config import Config
from llmkit.console import say
from llmkit.data.inputs import input_chunks
from llmkit.data.tokenizer import load_tokenizer
from llmkit.errors import LlmkitError
from llmkit.objectives import family_of
from llmkit.objectives.base import PredictRun
from llmkit.stages.common import make_accelerator, trained_model_source

CHUNK_EXAMPLES = 8192  # examples read, predicted and written at a time; batches are sorted by length within one


def run(cfg: Config, input_path: str, output_path: str | None, batch_size: int, top_k: int,
        task_name: str | None = None) -> int:
    cfg = _task_config(cfg, task_name)
    accelerator = make_accelerator(cfg)
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    family = family_of(cfg)
    chunks = input_chunks(input_path, family, cfg.data, CHUNK_EXAMPLES)
    first = next(chunks)  # a missing or unreadable input is reported before any model is loaded
    predict = family.predictor(cfg, source, tokenizer, PredictRun(accelerator, batch_size, top_k))
    sink = EmbeddingArray(output_path) if output_path and output_path.endswith(".npy") else JsonLines(output_path)
    try:
        for chunk in itertools.chain([first], chunks):
            sink.write(predict(chunk))
        return sink.close()
    finally:
        sink.discard()


class JsonLines:
    """Rows to stdout, or to a file that appears complete or not at all."""

    def __init__(self, path: str | None):
        self.path = path if path and path != "-" else None
        self.tmp = Path(f"{self.path}.tmp-{os.getpid()}") if self.path else None
        self.out = open(self.tmp, "w", encoding="utf-8") if self.tmp else sys.stdout
        self.count = 0

    def write(self, rows: list[dict]) -> None:
        self.out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self.count += len(rows)

    def close(self) -> int:
        if self.tmp:
            self.out.close()
            os.replace(self.tmp, self.path)
            say(f"{self.count} predictions written to {self.path}", err=True)
        return self.count

    def discard(self) -> None:
        if self.tmp:
            self.out.close()
            self.tmp.unlink(missing_ok=True)


class EmbeddingArray:
    """The rows' embeddings as one [rows, size] float32 .npy array: streamed to a raw file, then copied in
    behind the .npy header once the row count is known."""

    def __init__(self, path: str):
        self.path, self.raw = path, Path(f"{path}.raw-{os.getpid()}")
        self.out = open(self.raw, "wb")
        self.count, self.size = 0, None

    def write(self, rows: list[dict]) -> None:
        import numpy as np

        if "embedding" not in rows[0]:
            raise LlmkitError(f"--output: {self.path}: a .npy file holds embeddings, and this model predicts "
                              f"{', '.join(k for k in rows[0] if k != 'text')}; write .jsonl instead")
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        self.size = vectors.shape[1]
        self.out.write(vectors.tobytes())
        self.count += len(rows)

    def close(self) -> int:
        import numpy as np

        import shutil

        self.out.close()
        tmp = Path(f"{self.path}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f, open(self.raw, "rb") as raw:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (self.count, self.size)}
            np.lib.format.write_array_header_1_0(f, header)
            shutil.copyfileobj(raw, f, 1 << 20)
        os.replace(tmp, self.path)
        say(f"{self.count} embeddings of size {self.size} written to {self.path}", err=True)
        return self.count

    def discard(self) -> None:
        self.out.close()
        self.raw.unlink(missing_ok=True)


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
