"""Text to text (`finetune.task: seq2seq`): translation and summarization on an AutoModelForSeq2SeqLM (T5,
BART, Marian; a BERT2BERT EncoderDecoderModel with model.encoder_decoder), as transformers' run_translation.py
and run_summarization.py train them.

Rows hold a source (data.source_column; a list of sentences is joined) and a target (data.target_column): one
reference or a list, of which training reads the first and evaluation scores against all. One tokenizer reads
both sides (a tokenizer trained from scratch is trained on both); targets are tokenized with `text_target=`.
The loss is token cross-entropy on the target (finetune.seq2seq.label_smoothing_factor), summed and counted
over target tokens. Evaluation generates (greedy or beam search) and scores sacreBLEU, chrF and ROUGE-1/2/L
(llmkit.objectives.generation_metrics); `infer` writes {text, generated}.
"""

from __future__ import annotations

from llmkit.data.batching import length_batches, pad, pad_inputs
from llmkit.objectives.base import (IGNORE_INDEX, SEQ2SEQ_LM, TorchGenerator, load_trained_model, mean_loss,
                                    pad_token_id)
from llmkit.objectives.generation_metrics import generation_metrics
from llmkit.objectives.task import Task


class Seq2Seq(Task):
    model_kind = SEQ2SEQ_LM
    pipeline_task = None  # transformers 5.24 has no translation / summarization pipeline
    peft_task_type = "SEQ_2_SEQ_LM"
    has_classes = False
    generates = True
    onnx_outputs = {"sequences": ("batch", "target")}  # not one graph's: what ONNX Runtime generates with its three
    onnx_graphs = "encoder-decoder"
    onnx_card_batch = '["a man is riding a bike ."]'
    metric_names = ("loss", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "gen_len")

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        super().__init__(cfg, tokenizer, id2label)
        self.section = cfg.finetune.seq2seq
        self.thorough = False  # `llmkit evaluate`: generate even when training evaluations do not
        self.references: list[list[str]] = []  # per example of the evaluated split
        # A BERT-style tokenizer starts every text with [CLS]: for a target, that is the decoder's start token,
        # fed to the decoder rather than predicted.
        self.start_from_cls = tokenizer.bos_token_id is None and tokenizer.cls_token_id is not None

    # ------------------------------------------------------------------ reading rows

    @classmethod
    def text_columns(cls, data) -> list[str]:
        return [data.source_column, data.target_column]

    @classmethod
    def label_column(cls, data) -> str:
        return data.target_column

    @classmethod
    def label_vocabulary(cls, data, rows) -> dict[int, str]:
        return {}

    @classmethod
    def normalized(cls, data, rows, key: str):
        """Sources as one string; targets as their list of references."""
        source, target = data.source_column, data.target_column

        def normal(batch: dict) -> dict:
            out = {source: [_joined(v) for v in batch[source]]}
            if target in batch:
                out[target] = [_references(v) for v in batch[target]]
            return out

        return rows.map(normal, batched=True)

    @classmethod
    def row_problem(cls, data, values: dict, label2id) -> str | None:
        return None if values[data.target_column] else f"column {data.target_column!r} has no reference"

    @classmethod
    def input_fields(cls, data) -> dict[str, str]:
        return {"text": data.source_column}

    # ------------------------------------------------------------------ the model

    def model_labels(self) -> dict:
        """A model built here (from model.config, or warm-started as an encoder-decoder) gets the tokenizer's
        decoder start, end and padding tokens; a pretrained seq2seq model keeps its own."""
        if self.cfg.model.name_or_path is not None and not self.cfg.model.encoder_decoder:
            return {}
        t = self.tokenizer
        end = t.eos_token_id if t.eos_token_id is not None else t.sep_token_id
        start = t.cls_token_id if self.start_from_cls else pad_token_id(t)
        labels = {"decoder_start_token_id": start, "eos_token_id": end, "pad_token_id": pad_token_id(t)}
        return labels | ({"forced_eos_token_id": end} if _forces_an_end(self.cfg.model.config) else {})

    @classmethod
    def trained(cls, cfg, source: str, tokenizer, kind, thorough: bool = False):
        family = cls(cfg, tokenizer, {})
        family.thorough = thorough
        return family, load_trained_model(cfg, source, kind)

    @classmethod
    def with_model_config(cls, cfg, tokenizer, config: dict):
        return cls(cfg, tokenizer, {})

    @classmethod
    def card_usage(cls, folder: str) -> list[str]:
        return [*super().card_usage(folder), "",
                'inputs = tokenizer(["a man is riding a bike ."], return_tensors="pt", return_token_type_ids=False)',
                "output = model.generate(**inputs, max_new_tokens=32)",
                "print(tokenizer.batch_decode(output, skip_special_tokens=True))"]

    # ------------------------------------------------------------------ training

    def encode(self, rows):
        data, section = self.data, self.section
        source, target = data.source_column, data.target_column
        with_target = target in rows.column_names

        def tokenize(batch):
            out = {"input_ids": self._sources(batch[source])["input_ids"]}
            if with_target:
                labels = self.tokenizer(text_target=[refs[0] for refs in batch[target]], truncation=True,
                                        max_length=section.max_target_length)["input_ids"]
                out["labels"] = [ids[1:] if self.start_from_cls else ids for ids in labels]
            return out

        return rows.map(tokenize, batched=True, remove_columns=rows.column_names,
                        num_proc=data.preprocessing_num_workers)

    def _sources(self, texts: list[str]):
        prefix = self.section.source_prefix
        return self.tokenizer([prefix + text for text in texts], truncation=True,
                              max_length=self.data.max_seq_length, return_token_type_ids=False)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs({"input_ids": rows["input_ids"]}, pad_token_id(self.tokenizer))
        if "labels" in rows:
            batch["labels"] = pad(rows["labels"], IGNORE_INDEX)
            batch["example_ids"] = torch.tensor(example_ids)  # where eval_outputs finds the references
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    def loss(self, module, batch):
        import torch.nn.functional as F

        labels = batch["labels"]
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        decoder_input_ids=decoder_inputs(labels, model_config(module))).logits.float()
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum",
                               label_smoothing=self.section.label_smoothing_factor)
        return loss, self.count(batch)

    # ------------------------------------------------------------------ evaluation and infer

    def evaluation_data(self, split: str, task: str | None = None):
        encoded = super().evaluation_data(split, task)
        self.references = self.evaluation_rows[self.data.target_column]
        return encoded

    def eval_outputs(self, module, batch) -> list:
        """(generated text, its references) per example; nothing when this evaluation does not generate."""
        if not (self.thorough or self.section.generate_during_training):
            return []
        texts = self.generate(module, batch["input_ids"], batch["attention_mask"])
        return [(text, self.references[i]) for text, i in zip(texts, batch["example_ids"].tolist())]

    def generate(self, model, input_ids, attention_mask) -> list[str]:
        """The texts `model` (the torch model on tensors; TorchGenerator or OnnxSeq2Seq on numpy) generates.
        num_beams is always given, so that a model's own generation_config never switches the search."""
        s = self.section
        beams = {"length_penalty": s.length_penalty} if s.num_beams > 1 else {}
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                max_new_tokens=s.max_new_tokens, num_beams=s.num_beams, **beams)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        predictions, references = ([o[0] for o in outputs], [o[1] for o in outputs])
        return {"loss": mean_loss(loss_sum, count), **generation_metrics(predictions, references)}

    def prediction_record(self, output) -> dict:
        predicted, references = output
        return {"gold": references, "predicted": predicted}

    @classmethod
    def predict_model(cls, model, run):
        return TorchGenerator(model, run.accelerator)

    def predict(self, model, examples: list[dict], run) -> list[dict]:
        """{text, generated} per example, generated in batches of similar source length, in input order."""
        encoded = self._sources([_joined(e["text"]) for e in examples])["input_ids"]
        results: list[dict | None] = [None] * len(examples)
        for ids in length_batches([len(row) for row in encoded], run.batch_size):
            inputs = pad_inputs({"input_ids": [encoded[i] for i in ids]}, pad_token_id(self.tokenizer), as_numpy=True)
            for i, text in zip(ids, self.generate(model, inputs["input_ids"], inputs["attention_mask"])):
                results[i] = {**examples[i], "generated": text}
        return results

    def export_inputs(self, lines: list[str]) -> dict:
        return pad_inputs({"input_ids": self._sources(lines)["input_ids"]}, pad_token_id(self.tokenizer))


def decoder_inputs(labels, config):
    """The decoder's inputs for teacher forcing: the labels shifted right after the start token, padding for
    the ignored positions."""
    shifted = labels.new_full(labels.shape, config.decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, config.pad_token_id)


def model_config(module):
    """The model config behind a DDP / DeepSpeed wrapper (PEFT models pass attribute reads through)."""
    return getattr(module, "module", module).config


def _forces_an_end(config: dict | None) -> bool:
    """A model_type whose config forces a token at the last position generation allows (BART, Marian): the one
    its default names is of its pretrained vocabulary, not of the tokenizer trained here."""
    from transformers import AutoConfig

    return bool(config) and getattr(AutoConfig.for_model(config["model_type"]), "forced_eos_token_id", None) is not None


def _joined(value) -> str | None:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    return None if value is None else str(value)


def _references(value) -> list[str] | None:
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]
