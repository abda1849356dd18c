"""The protocol every objective and task follows, and the defaults most of them share.

A family is one class; the stages, the training loop and evaluation use nothing else of it:

    Family.model_kind                    the AutoModel* class it trains, and how a trained one is recognised
    Family.pipeline_task                 the transformers.pipeline task its saved model loads under (or None)
    family.wrap(model)                   the module the loop trains and evaluates (default: the model itself)
    family.collate(rows, ids, epoch)     rows of its data -> a batch of tensors
    family.count(batch)                  what the loss is averaged over (predicted tokens, examples)
    family.loss(module, batch)           (summed loss, count)
    family.eval_outputs(module, batch)   per-example results, gathered over processes
    family.metrics(loss_sum, count, outputs)
    family.prediction_records(outputs)   `evaluate --save-predictions`' rows (a task's inputs, gold, predicted)
    family.predict(model, examples, run) a chunk of `infer` inputs -> the JSON rows it writes, in order
    family.predictions(logits, ...)      a batch's logits (numpy, from torch or ONNX Runtime) -> its JSON rows
    Family.onnx_outputs                  what its ONNX graph returns (llmkit export; None: it has no export)
    Family.onnx_graphs                   "logits" (one graph) or "encoder-decoder" (generation on ONNX Runtime)
    Family.predict_model(model, run)     the torch model as predict takes it (TorchLogits, TorchGenerator)
    Family.onnx_card_batch               what the exported folder's README snippet encodes
    family.export_inputs(lines)          the batch `llmkit export` traces and checks its graph on
    Family.evaluation(cfg, split, ...)   `llmkit evaluate`'s scores  |  Family.predictor(...): `infer`'s

Objective (pretraining) and Task (fine-tuning) add how their data is read and encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmkit.data.batching import length_batches, pad_inputs

if TYPE_CHECKING:
    from llmkit.config import Config

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ModelKind:
    """A kind of Hugging Face model: its Auto class, and the architecture names that carry its head."""

    auto_class: str  # e.g. AutoModelForMaskedLM
    architectures: tuple[str, ...]  # suffixes of config.architectures (GPT2LMHeadModel ends in LMHeadModel)
    head: str  # how messages name the head
    trained_by: str  # the command that trains one, for hints

    def auto(self):
        import transformers

        return getattr(transformers, self.auto_class)

    def fits(self, architectures: list[str]) -> bool:
        return any(a.endswith(self.architectures) for a in architectures)


SEQ2SEQ_LM = ModelKind("AutoModelForSeq2SeqLM", ("ForConditionalGeneration", "MTModel", "EncoderDecoderModel"),
                       "sequence-to-sequence", "finetune")  # T5, BART, Marian, BERT2BERT (EncoderDecoderModel)


@dataclass
class PredictRun:
    """How `infer` runs: where (None: ONNX Runtime), how many inputs per forward, fill-mask candidates per mask."""

    accelerator: Any
    batch_size: int
    top_k: int = 5


class Family:
    model_kind: ClassVar[ModelKind]
    predict_kind: ClassVar[ModelKind | None] = None  # the model `infer` loads when not model_kind
    pipeline_task: ClassVar[str | None]  # None: the installed transformers has no pipeline for it
    unused_parameters: ClassVar[bool] = False  # DDP must expect parameters that get no gradient in a step
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)  # the scalars its evaluation reports (num_examples aside)
    example_predictions: ClassVar[bool] = False  # evaluate --save-predictions writes its per-example records
    # `llmkit export --format onnx`: the graph's outputs -> the names of their leading dims that vary
    # ({"logits": ("batch",)}: one row per example); None: the family has no ONNX export yet
    onnx_outputs: ClassVar[dict[str, tuple[str, ...]] | None] = None
    # what the export is: "logits" (one model.onnx returning onnx_outputs) or "encoder-decoder" (an encoder and a
    # decoder with past, which ONNX Runtime generates with: llmkit.onnx_generate)
    onnx_graphs: ClassVar[str] = "logits"
    onnx_input_dims: ClassVar[tuple[str, ...]] = ("batch", "sequence")  # of each input (multiple choice: 3-D)
    # the exported README's example: what its snippet hands tokenizers' encode_batch (texts, or (first, second) pairs)
    onnx_card_batch: ClassVar[str] = '["the food was great ."]'
    generates: ClassVar[bool] = False  # it generates text: its predict is handed no TorchLogits (predict_model)

    cfg: Config
    tokenizer: Any

    def wrap(self, model):
        return model

    def eval_outputs(self, module, batch) -> list:
        return []

    def prediction_records(self, outputs: list) -> list[dict]:
        """Per-example records of the evaluated split (example_predictions families)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluate and infer

    @classmethod
    def trained(cls, cfg: Config, source: str, tokenizer, kind: ModelKind, thorough: bool = False):
        """(family, model) for a trained model at `source`: the model has `kind`'s head."""
        raise NotImplementedError

    @classmethod
    def evaluation(cls, cfg: Config, split: str, source: str, tokenizer, accelerator, task: str | None = None,
                   predictions: list | None = None) -> dict:
        """`llmkit evaluate`: the loss and metrics of the trained model on a split, every metric it has.
        `task`: the name of a multi-task run's task, which messages then name. `predictions`: where a task puts
        its per-example records (inputs, gold, predicted, score); a family without them refuses."""
        from llmkit.evaluation import evaluate

        refuse_predictions(cls, predictions)
        family, model = cls.trained(cfg, source, tokenizer, cls.model_kind, thorough=True)
        with accelerator.main_process_first():
            data = family.evaluation_data(split, task)
        outputs = [] if predictions is not None else None
        results = evaluate(accelerator, accelerator.prepare(family.wrap(model)), family, data,
                           cfg.train.per_device_eval_batch_size, outputs)
        if predictions is not None:
            predictions.extend(family.prediction_records(outputs))
        return results

    def evaluation_data(self, split: str, task: str | None = None):
        raise NotImplementedError

    @classmethod
    def predictor(cls, cfg: Config, source: str, tokenizer, run: PredictRun):
        """`llmkit infer`: a function from a chunk of input examples to their JSON rows."""
        family, model = cls.trained(cfg, source, tokenizer, cls.predict_kind or cls.model_kind)
        model = cls.predict_model(model.to(run.accelerator.device).eval(), run)
        return lambda examples: family.predict(model, examples, run)

    @classmethod
    def predict_model(cls, model, run: PredictRun):
        """The torch model as `predict` takes it: TorchLogits, or for a generating family the model itself."""
        return model if cls.generates else TorchLogits(model, run.accelerator, list(cls.onnx_outputs))

    @classmethod
    def with_model_config(cls, cfg: Config, tokenizer, config: dict):
        """The family for a trained model whose config.json holds `config` (its labels, for a task)."""
        raise NotImplementedError

    @classmethod
    def card_usage(cls, folder: str) -> list[str]:
        """The model card's Python snippet for a family without a pipeline: its Auto class on the folder."""
        auto = cls.model_kind.auto_class
        return [f"from transformers import AutoTokenizer, {auto}", "",
                f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
                f'model = {auto}.from_pretrained("{folder}")']

    @classmethod
    def input_fields(cls, data) -> dict[str, str]:
        """Example field -> the column of an input table it is read from."""
        return {"text": data.text_column}

    @classmethod
    def from_line(cls, line: str) -> dict:
        """The example a line of a .txt input (or of stdin) is."""
        return {"text": line}

    def predict(self, model, examples: list[dict], run: PredictRun) -> list[dict]:
        """Forward passes over batches of (nearly) equal token counts: little compute goes to padding, and a
        batch without any runs attention unmasked. Rows come back in input order. `model`: numpy inputs ->
        numpy fp32 outputs by name (TorchLogits, or llmkit.onnx_runtime's session), so one post-processing serves
        both; the families this serves return one, their logits."""
        encoded = self.encode_inputs(examples)
        columns = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        results: list[dict | None] = [None] * len(examples)
        for ids in length_batches([len(row) for row in encoded["input_ids"]], run.batch_size):
            inputs = pad_inputs({k: [encoded[k][i] for i in ids] for k in columns}, pad_token_id(self.tokenizer),
                                as_numpy=True)
            logits = model(inputs, self.logit_positions(inputs))["logits"]
            for i, prediction in zip(ids, self.predictions(logits, inputs, encoded, ids, examples, run)):
                results[i] = {**examples[i], **prediction}
        return results

    def export_inputs(self, lines: list[str]) -> dict:
        """A padded batch (torch tensors, as the graph takes them) of `lines` that `llmkit export` traces the
        model on and checks the ONNX graph against it with."""
        encoded = self.encode_inputs([self.from_line(line) for line in lines])
        return pad_inputs({k: encoded[k] for k in ("input_ids", "token_type_ids") if k in encoded},
                          pad_token_id(self.tokenizer))

    def logit_positions(self, inputs: dict) -> np.ndarray | None:
        """The token positions whose logits `predictions` reads ([batch, length] booleans; None: all the
        logits): only these leave the device."""
        return None

    def encode_inputs(self, examples: list[dict]):
        texts = [e["text"] for e in examples]
        pairs = [e["text_pair"] for e in examples] if "text_pair" in examples[0] else None
        return self.tokenizer(texts, pairs, truncation=True, max_length=self.cfg.data.max_seq_length)

    def predictions(self, logits, inputs: dict, encoded, ids: list[int], examples: list[dict],
                    run: PredictRun) -> list[dict]:
        """One prediction per row of the batch `ids`: `logits` a numpy fp32 array, as the model returns them (or
        at logit_positions), `inputs` the padded numpy batch."""
        raise NotImplementedError


class TorchLogits:
    """A torch model as `predict` calls it: numpy inputs in, the model's `outputs` (the family's onnx_outputs,
    as ONNX Runtime returns them) out as fp32 numpy by name (those of the input's own tokens at `positions`, when
    given), run on the accelerator's device under its autocast, without gradients."""

    def __init__(self, model, accelerator, outputs: list[str]):
        self.model, self.accelerator, self.outputs = model, accelerator, outputs

    def __call__(self, inputs: dict[str, np.ndarray], positions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        import torch

        device = self.accelerator.device
        with torch.no_grad(), self.accelerator.autocast():
            tensors = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
            result = self.model(**tensors)
            arrays = {name: result[name].float() for name in self.outputs}
        if positions is not None:
            selected = torch.from_numpy(positions).to(device)
            arrays = {name: token_logits(v, tensors["input_ids"])[selected] for name, v in arrays.items()}
        return {name: v.cpu().numpy() for name, v in arrays.items()}


class TorchGenerator:
    """A torch encoder-decoder as a generating `predict` calls it (as llmkit.onnx_generate.OnnxSeq2Seq):
    `generate()` with numpy inputs in and the generated ids out as numpy, on the accelerator's device under its
    autocast, without gradients."""

    def __init__(self, model, accelerator):
        self.model, self.accelerator = model, accelerator

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, **generation) -> np.ndarray:
        import torch

        device = self.accelerator.device
        with torch.no_grad(), self.accelerator.autocast():
            output = self.model.generate(input_ids=torch.from_numpy(input_ids).to(device),
                                         attention_mask=torch.from_numpy(attention_mask).to(device), **generation)
        return output.cpu().numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, in the logits' precision (fp32), as torch's softmax."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * logits))  # = 1 / (1 + e^-x), without overflowing for large -x


def refuse_predictions(family: type, predictions: list | None) -> None:
    """--save-predictions of a family whose evaluation has no per-example records: one clear line, before any work."""
    if predictions is not None and not family.example_predictions:
        from llmkit.errors import LlmkitError

        raise LlmkitError(f"--save-predictions: per-example predictions are a fine-tuned task's; {family.__name__} "
                          "scores its split as a whole")


def token_logits(logits, input_ids):
    """Per-token logits of the input's own tokens: prompt tuning prepends virtual tokens, whose logits go."""
    return logits[:, -input_ids.shape[1]:]


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def pad_token_id(tokenizer) -> int:
    """GPT-2's tokenizer has no pad token; padded positions are masked out, so eos serves."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def mean_loss(loss_sum: float, count: int) -> float:
    return loss_sum / max(count, 1)


def language_model_metrics(loss_sum: float, count: int) -> dict:
    """Mean loss per predicted token and its exponential, the perplexity."""
    loss = mean_loss(loss_sum, count)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "num_predicted_tokens": count}


def load_trained_model(cfg: Config, source: str, kind: ModelKind):
    from llmkit.modeling import load_trained

    return load_trained(source, kind, trust_remote_code=cfg.model.trust_remote_code)
