"""Pick one of several choices (`finetune.task: multiple_choice`, e.g. SWAG, Cosmos QA), from a
*ForMultipleChoice head: each (context, question + choice) pair is one sequence scored by one output
unit, and a softmax over a row's choices picks one (cross-entropy against the label).

Rows hold a context, an optional question, the choices (data.choice_columns, a column each, or
data.choices_column, one list) and the label: the gold choice's 0-based position. A sequence is
`[CLS] context [SEP] question choice [SEP]`, the longer side truncated first. Rows may have different
numbers of choices (a list column): a batch is padded to its most, and a padded choice never wins. The
model config's `id2label` numbers the positions (as many as the training rows' most choices).
Metrics: accuracy, and per gold position its accuracy, its rows and how often it is predicted.
`infer` writes {choice, scores}: the predicted position and one probability per choice.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from llmkit.data.batching import length_batches, pad_inputs
from llmkit.errors import LlmkitError
from llmkit.objectives.base import ModelKind, mean_loss, model_inputs, pad_token_id, softmax
from llmkit.objectives.task import Task

MULTIPLE_CHOICE = ModelKind("AutoModelForMultipleChoice", ("ForMultipleChoice",), "multiple-choice", "finetune")
SEQUENCES = ("input_ids", "token_type_ids")


class MultipleChoice(Task):
    model_kind = MULTIPLE_CHOICE
    pipeline_task = None  # transformers has no multiple-choice pipeline: the card shows the Auto class
    # PEFT has no multiple-choice type. SEQ_CLS's wrapper hands [batch, choices, length] inputs to the model
    # as they are, and trains the head (`classifier`) in full next to the LoRA adapters.
    peft_task_type = "SEQ_CLS"
    stratified = True  # a held-out share keeps the gold positions' proportions
    metric_names = ("loss", "accuracy")
    onnx_outputs = {"logits": ("batch", "choices")}
    onnx_input_dims = ("batch", "choices", "sequence")
    onnx_card_batch = ('[("The soup was cold and the waiter never came back.", choice) '
                       'for choice in ("We will come again.", "We will not come again.")]')

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        if cfg.finetune.method == "prompt":
            raise LlmkitError("finetune.method: prompt puts virtual tokens in front of [batch, length] inputs, and "
                              "multiple choice's are [batch, choices, length]: use full, freeze or lora")
        super().__init__(cfg, tokenizer, id2label)

    # ------------------------------------------------------------------ reading rows

    @classmethod
    def choice_columns(cls, data) -> list[str]:
        """Where the choices are: data.choice_columns, or data.choices_column (one list per row)."""
        if data.choice_columns:
            return list(data.choice_columns)
        if data.choices_column is not None:
            return [data.choices_column]
        raise LlmkitError("data.choice_columns: multiple choice reads its choices from a column each (e.g. "
                          "[answer0, answer1, answer2, answer3]) or from one list column (data.choices_column); "
                          "set one")

    @classmethod
    def text_columns(cls, data) -> list[str]:
        question = [data.question_column] if data.question_column else []
        return [data.context_column, *question, *cls.choice_columns(data)]

    @classmethod
    def input_fields(cls, data) -> dict[str, str]:
        """infer's rows carry the training columns, under their names."""
        return {column: column for column in cls.text_columns(data)}

    @classmethod
    def row_problem(cls, data, values: dict, label2id) -> str | None:
        """The label must be one of the row's positions; every choice must have text (labels are positions, so
        training's label2id has nothing to add)."""
        choices = row_choices(data, values)
        empty = next((i for i, choice in enumerate(choices) if choice is None or not str(choice).strip()), None)
        if not choices:
            return f"column {data.choices_column!r} holds no choices"
        if empty is not None:
            return f"choice {empty} is empty"
        label = str(values[data.label_column]).strip()
        if not (label.isdigit() and int(label) < len(choices)):
            return f"label {values[data.label_column]!r} is not a choice's position (0 to {len(choices) - 1})"
        return None

    @classmethod
    def label_vocabulary(cls, data, rows) -> dict[int, str]:
        """The positions of the training rows' choices."""
        most = len(data.choice_columns) if data.choice_columns else max(map(len, rows[data.choices_column]))
        return {i: str(i) for i in range(most)}

    # ------------------------------------------------------------------ encoding and batches

    def model_labels(self) -> dict:
        """The positions only: the head has one output unit whatever the number of choices (no num_labels)."""
        return {"id2label": self.id2label, "label2id": self.label2id}

    def encode_examples(self, examples: list[dict]) -> dict:
        """Rows (column -> value) -> per row, a sequence per choice (input_ids [choices][tokens]), and the
        tokens the row takes padded alone (`length`: what train.group_by_length and evaluation sort by)."""
        data = self.data
        firsts, seconds, counts = [], [], []
        for values in examples:
            choices = [str(choice) for choice in row_choices(data, values)]
            question = f"{values[data.question_column]} " if data.question_column else ""
            firsts += [str(values[data.context_column])] * len(choices)
            seconds += [question + choice for choice in choices]
            counts.append(len(choices))
        encoded = self.tokenizer(firsts, seconds, truncation=True, max_length=data.max_seq_length)
        starts = list(accumulate(counts, initial=0))
        out = {k: [encoded[k][s:s + n] for s, n in zip(starts, counts)] for k in SEQUENCES if k in encoded}
        out["length"] = [len(row) * max(map(len, row)) for row in out["input_ids"]]
        return out

    def encode(self, rows):
        column = self.data.label_column
        with_labels = column in rows.column_names

        def tokenize(batch):
            out = self.encode_examples([dict(zip(batch, values)) for values in zip(*batch.values())])
            if with_labels:
                out["labels"] = [int(str(label).strip()) for label in batch[column]]
            return out

        return rows.map(tokenize, batched=True, remove_columns=rows.column_names,
                        num_proc=self.data.preprocessing_num_workers)

    def choice_batch(self, rows: dict) -> dict:
        """[batch, choices, length] numpy arrays, and choice_mask: a row with fewer choices is filled with
        one-token choices (attended, so no attention row is empty) that the mask leaves out."""
        pad_id = pad_token_id(self.tokenizer)
        most = max(map(len, rows["input_ids"]))
        filler = {"input_ids": [pad_id], "token_type_ids": [0]}
        flat = {k: [seq for row in rows[k] for seq in [*row, *[filler[k]] * (most - len(row))]]
                for k in SEQUENCES if k in rows}
        padded = pad_inputs(flat, pad_id, as_numpy=True)
        batch = {k: v.reshape(len(rows["input_ids"]), most, -1) for k, v in padded.items()}
        batch["choice_mask"] = np.array([[j < len(row) for j in range(most)] for row in rows["input_ids"]])
        return batch

    def export_inputs(self, lines: list[str]) -> dict:
        """A [batch, choices, length] check batch: each line a row's context (and question, read only when the rows
        have one), every line a choice (as many as the trained positions)."""
        import torch

        data = self.data
        choices = [lines[j % len(lines)] for j in range(len(self.id2label))]
        columns = dict(zip(data.choice_columns, choices)) if data.choice_columns else {data.choices_column: choices}
        rows = [{data.context_column: line, data.question_column: line, **columns} for line in lines]
        batch = self.choice_batch(self.encode_examples(rows))
        batch.pop("choice_mask")  # every row has all the choices
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = {k: torch.from_numpy(v) for k, v in self.choice_batch(rows).items()}
        if "labels" in rows:
            batch["labels"] = torch.tensor(rows["labels"])
        return batch

    def count(self, batch):
        return batch["input_ids"].new_tensor(len(batch["labels"]))

    @staticmethod
    def logits(module, batch):
        """[batch, choices] scores; a padded choice's is -inf."""
        logits = module(**model_inputs(batch)).logits.float()
        return logits.masked_fill(~batch["choice_mask"], float("-inf"))

    def loss(self, module, batch):
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(module, batch), batch["labels"], reduction="sum"), self.count(batch)

    # ------------------------------------------------------------------ results

    def eval_outputs(self, module, batch) -> list:
        """(predicted position, gold position, the predicted choice's probability) per row."""
        scores, predicted = self.logits(module, batch).softmax(-1).max(-1)
        return list(zip(predicted.tolist(), batch["labels"].tolist(), scores.tolist()))

    def prediction_record(self, output) -> dict:
        predicted, gold, score = output
        return {"gold": gold, "predicted": predicted, "score": score}

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return {"loss": mean_loss(loss_sum, count), **choice_metrics([o[0] for o in outputs], [o[1] for o in outputs])}

    def predict(self, model, examples: list[dict], run) -> list[dict]:
        """{choice, scores} per row, in input order; rows are batched by padded size. `model`: numpy inputs ->
        numpy outputs by name (Family.predict's)."""
        encoded = self.encode_examples(examples)
        results: list[dict | None] = [None] * len(examples)
        for ids in length_batches(encoded["length"], run.batch_size):
            inputs = self.choice_batch({k: [encoded[k][i] for i in ids] for k in SEQUENCES if k in encoded})
            mask = inputs.pop("choice_mask")
            for i, scores in zip(ids, softmax(np.where(mask, model(inputs)["logits"], -np.inf)).tolist()):
                scores = scores[:len(encoded["input_ids"][i])]
                results[i] = {**examples[i], "choice": max(range(len(scores)), key=scores.__getitem__),
                              "scores": scores}
        return results

    @classmethod
    def card_usage(cls, folder: str) -> list[str]:
        """The Auto class scoring a context's choices: one (context, choice) pair each, as [1, choices, length]."""
        return [*super().card_usage(folder), "",
                'context = "The soup was cold and the waiter never came back."',
                'choices = ["We will come again.", "We will not come again."]',
                'inputs = tokenizer([context] * len(choices), choices, padding=True, return_tensors="pt")',
                "scores = model(**{k: v[None] for k, v in inputs.items()}).logits.softmax(-1)[0]",
                "print(choices[int(scores.argmax())], scores.tolist())"]


def row_choices(data, values: dict) -> list:
    """A row's choices, in position order."""
    if data.choice_columns:
        return [values[column] for column in data.choice_columns]
    return list(values[data.choices_column] or [])


def choice_metrics(predicted: list[int], gold: list[int]) -> dict:
    """Accuracy, and per gold position: the accuracy of the rows whose gold it is, their number, and the share of
    all rows that predict it (a model that favours a position shows there)."""
    right = [p == g for p, g in zip(predicted, gold)]
    per_position = {}
    for k in range(max([*predicted, *gold], default=-1) + 1):
        rows = [r for r, g in zip(right, gold) if g == k]
        per_position[str(k)] = {"accuracy": sum(rows) / len(rows) if rows else None, "support": len(rows),
                                "predicted_share": predicted.count(k) / len(predicted)}
    return {"accuracy": sum(right) / max(len(right), 1), "per_position": per_position}
