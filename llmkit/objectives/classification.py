"""One prediction per text (or text pair), from a *ForSequenceClassification head:

    sequence_classification     one label of several, cross-entropy          {text, label, score, scores}
    regression                  one number (e.g. STS-B similarity), MSE       {text, score}
    multi_label_classification  any number of labels, one sigmoid each (BCE)  {text, labels, scores}
"""

from __future__ import annotations

from llmkit.data.batching import pad_inputs
from llmkit.data.labeled import label_list
from llmkit.errors import LlmkitError
from llmkit.objectives.base import ModelKind, mean_loss, model_inputs, sigmoid, softmax
from llmkit.objectives.task import Task

SEQUENCE_CLASSIFICATION = ModelKind("AutoModelForSequenceClassification", ("ForSequenceClassification",),
                                    "sequence-classification", "finetune")


class SequenceClassification(Task):
    """One label per text (or text pair): cross-entropy over the labels."""

    model_kind = SEQUENCE_CLASSIFICATION
    pipeline_task = "text-classification"
    peft_task_type = "SEQ_CLS"
    problem_type = "single_label_classification"
    stratified = True
    onnx_outputs = {"logits": ("batch",)}
    metric_names = ("loss", "accuracy", "precision", "recall", "f1", "precision_micro", "recall_micro", "f1_micro",
                    "mcc", "f1_binary")  # f1_binary: two-class tasks
    POSITIVE_NAMES = ("1", "positive", "true", "yes")

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        super().__init__(cfg, tokenizer, id2label)
        self.positive = self.positive_class() if len(id2label) == 2 else None

    def positive_class(self) -> int:
        """The id of data.positive_label, else of a label named 1 / positive / true / yes, else 1."""
        chosen = self.data.positive_label
        if chosen is not None and chosen not in self.label2id:
            raise LlmkitError(f"data.positive_label: {chosen!r} is not one of the labels {list(self.label2id)}")
        if chosen is not None:
            return self.label2id[chosen]
        return next((i for name, i in self.label2id.items() if name.lower() in self.POSITIVE_NAMES), 1)

    def targets(self, values: list) -> list:
        """The label column's values as the `labels` the loss reads."""
        return [self.label2id[str(v)] for v in values]

    def encode(self, rows):
        data = self.data
        text, pair, column = data.text_column, data.text_pair_column, data.label_column
        targets = self.targets(rows[column]) if column in rows.column_names else None

        def tokenize(batch, indices):
            encoded = self.tokenizer(batch[text], batch[pair] if pair else None, truncation=True,
                                     max_length=data.max_seq_length)
            out = {"input_ids": encoded["input_ids"]}
            if "token_type_ids" in encoded:
                out["token_type_ids"] = encoded["token_type_ids"]
            if targets is not None:
                out["labels"] = [targets[i] for i in indices]
            return out

        return rows.map(tokenize, batched=True, with_indices=True, remove_columns=rows.column_names,
                        num_proc=data.preprocessing_num_workers)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        if "labels" in rows:
            import torch

            batch["labels"] = torch.tensor(rows["labels"])  # int64 class ids; float32 scores or multi-hot rows
        return batch

    def count(self, batch):
        return batch["input_ids"].new_tensor(len(batch["labels"]))

    def logits(self, module, batch):
        return module(**model_inputs(batch)).logits.float()

    def loss(self, module, batch):
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(module, batch), batch["labels"], reduction="sum"), self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        """(predicted id, gold id, the predicted label's probability) per example."""
        scores, predictions = self.logits(module, batch).softmax(-1).max(-1)
        return list(zip(predictions.tolist(), batch["labels"].tolist(), scores.tolist()))

    def prediction_record(self, output) -> dict:
        predicted, gold, score = output
        return {"gold": self.id2label[gold], "predicted": self.id2label[predicted], "score": score}

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import classification_metrics

        predictions, labels = ([o[0] for o in outputs], [o[1] for o in outputs])
        return {"loss": mean_loss(loss_sum, count),
                **classification_metrics(labels, predictions, self.id2label, self.positive)}

    def predictions(self, logits, inputs, encoded, ids, examples, run) -> list[dict]:
        results = []
        for probabilities in softmax(logits).tolist():
            best = max(range(len(probabilities)), key=probabilities.__getitem__)
            results.append({"label": self.id2label[best], "score": probabilities[best],
                            "scores": {self.id2label[i]: p for i, p in enumerate(probabilities)}})
        return results


class Regression(SequenceClassification):
    """One number per text (or pair), e.g. STS-B similarity: mean squared error."""

    problem_type = "regression"
    stratified = False
    has_classes = False
    metric_names = ("loss", "pearson", "spearman", "mse")
    PLOTTED = 5000  # examples whose (gold, predicted) pair goes into the results, for the report's scatter

    @classmethod
    def label_vocabulary(cls, data, rows) -> dict[int, str]:
        return {0: "score"}

    @classmethod
    def row_problem(cls, data, values: dict, label2id) -> str | None:
        value = values[data.label_column]
        try:
            float(value)
        except (TypeError, ValueError):
            return f"regression target {value!r} is not a number"
        return None

    def targets(self, values: list) -> list:
        return [float(v) for v in values]

    def loss(self, module, batch):
        prediction = self.logits(module, batch).squeeze(-1)
        return ((prediction - batch["labels"]) ** 2).sum(), self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        return list(zip(self.logits(module, batch).squeeze(-1).tolist(), batch["labels"].tolist()))

    def prediction_record(self, output) -> dict:
        predicted, gold = output
        return {"gold": gold, "predicted": predicted}

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import regression_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": mean_loss(loss_sum, count), **regression_metrics(labels, predictions),
                "predictions": {"gold": list(labels[:self.PLOTTED]), "predicted": list(predictions[:self.PLOTTED])}}

    def predictions(self, logits, inputs, encoded, ids, examples, run) -> list[dict]:
        return [{"score": score} for score in logits[:, 0].tolist()]


class MultiLabelClassification(SequenceClassification):
    """Any number of labels per text (a list, or one string split on data.label_separator): one sigmoid
    per label (binary cross-entropy), finetune.threshold decides."""

    problem_type = "multi_label_classification"
    stratified = False
    metric_names = ("loss", "accuracy", "precision", "recall", "f1", "precision_micro", "recall_micro", "f1_micro")

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        super().__init__(cfg, tokenizer, id2label)
        self.threshold = cfg.finetune.threshold

    @classmethod
    def labels_of(cls, data, value) -> list[str]:
        return label_list(data, value)

    @classmethod
    def normalized(cls, data, rows, key: str):
        """A cell of labels joined by data.label_separator becomes their list before they are named."""
        column = data.label_column
        if data.label_names is not None and column in rows.column_names:
            rows = rows.map(lambda batch: {column: [None if v is None else label_list(data, v) for v in batch[column]]},
                            batched=True)
        return super().normalized(data, rows, key)

    def targets(self, values: list) -> list:
        targets = []
        for value in values:
            hot = [0.0] * len(self.label2id)
            for name in label_list(self.data, value):
                hot[self.label2id[name]] = 1.0
            targets.append(hot)
        return targets

    def loss(self, module, batch):
        import torch.nn.functional as F

        logits = self.logits(module, batch)
        # Summed over labels and averaged per example, so the loop's per-example normalisation applies.
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum") / logits.shape[-1]
        return loss, self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        predicted = (self.logits(module, batch).sigmoid() > self.threshold).int()
        return list(zip(predicted.tolist(), batch["labels"].int().tolist()))

    def prediction_record(self, output) -> dict:
        predicted, gold = output
        return {"gold": [self.id2label[i] for i, hot in enumerate(gold) if hot],
                "predicted": [self.id2label[i] for i, hot in enumerate(predicted) if hot]}

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import multilabel_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": mean_loss(loss_sum, count), **multilabel_metrics(labels, predictions, self.id2label)}

    def predictions(self, logits, inputs, encoded, ids, examples, run) -> list[dict]:
        results = []
        for probabilities in sigmoid(logits).tolist():
            results.append({"labels": [self.id2label[i] for i, p in enumerate(probabilities) if p > self.threshold],
                            "scores": {self.id2label[i]: p for i, p in enumerate(probabilities)}})
        return results
