"""What fine-tuning tasks share: labelled rows read from a split's file, checked, and numbered labels.

Labels may be strings or integers; they are kept as strings (`"0"`, `"positive"`) and numbered in
sorted order (numeric order when all are integers). The mapping is saved in the model config as
`id2label` / `label2id`, which is where evaluate and infer read it back from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmkit.data.formats import PROBLEM
from llmkit.data.labeled import check_rows, read_split
from llmkit.objectives.base import Family, ModelKind, load_trained_model

if TYPE_CHECKING:
    from llmkit.config import Config, DataSection


class Task(Family):
    """A fine-tuning task: a head trained on labelled rows."""

    example_predictions = True

    peft_task_type: ClassVar[str]  # PEFT's TaskType for LoRA and prompt tuning
    problem_type: ClassVar[str | None] = None  # transformers' config.problem_type
    stratified: ClassVar[bool] = False  # a held-out validation share keeps the training labels' proportions
    has_classes: ClassVar[bool] = True  # its labels are names (not a regression's numbers), counted by validate

    def __init__(self, cfg: Config, tokenizer, id2label: dict[int, str]):
        self.cfg, self.data, self.tokenizer, self.id2label = cfg, cfg.data, tokenizer, id2label
        self.label2id = {name: i for i, name in id2label.items()}
        self.evaluation_rows = None  # the checked rows evaluation_data encoded last

    # ------------------------------------------------------------------ reading rows (no tokenizer yet)

    @classmethod
    def text_columns(cls, data: DataSection) -> list[str]:
        return [data.text_column] + ([data.text_pair_column] if data.text_pair_column else [])

    @classmethod
    def label_column(cls, data: DataSection) -> str:
        return data.label_column

    @classmethod
    def labels_of(cls, data: DataSection, value) -> list[str]:
        """The label names one row's label cell holds."""
        return [str(value)]

    @classmethod
    def normalized(cls, data: DataSection, rows, key: str):
        """Rows as read (of config key `key`'s file), made ready to check and encode: labels get the names
        data.label_names gives them; a label without one makes its row bad."""
        column = cls.label_column(data)
        if data.label_names is None or column not in rows.column_names:
            return rows
        names = data.label_names

        def name(label) -> str | None:
            if isinstance(names, dict):
                return names.get(label)
            return names[int(label)] if label.isdigit() and int(label) < len(names) else None

        def named(batch: dict) -> dict:
            cells, problems = [], []
            for cell, problem in zip(batch[column], batch.get(PROBLEM) or [None] * len(batch[column])):
                labels = [] if problem or cell is None else cls.labels_of(data, cell)
                unnamed = next((label for label in labels if name(label) is None), None)
                if unnamed is not None:
                    problem = f"label {unnamed!r} has no name in data.label_names" + (
                        f" (a list names the labels 0 to {len(names) - 1})" if isinstance(names, list) else "")
                named_labels = [name(label) for label in labels] if problem is None else None
                cells.append(named_labels if named_labels is None or isinstance(cell, list) else named_labels[0])
                problems.append(problem)
            return {column: cells, PROBLEM: problems}

        return rows.map(named, batched=True)

    @classmethod
    def row_problem(cls, data: DataSection, values: dict, label2id: dict[str, int] | None) -> str | None:
        """Why a row cannot be used, or None. Labels are checked against label2id when it is given."""
        if label2id is None:
            return None
        unseen = [name for name in cls.labels_of(data, values[cls.label_column(data)]) if name not in label2id]
        return f"label {unseen[0]!r} was not seen in training (the model knows {list(label2id)})" if unseen else None

    @classmethod
    def label_vocabulary(cls, data: DataSection, rows) -> dict[int, str]:
        """The training rows' labels, numbered in sorted order (numeric when all are integers), or in the
        order data.label_names gives."""
        column = cls.label_column(data)
        names = {name for value in rows[column] for name in cls.labels_of(data, value)}
        if data.label_names is not None:  # in the order the user named them
            given = data.label_names.values() if isinstance(data.label_names, dict) else data.label_names
            return dict(enumerate(name for name in given if name in names))
        ordered = sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else sorted(names)
        return dict(enumerate(ordered))

    @classmethod
    def training_rows(cls, cfg: Config, task: str | None = None):
        """(checked training rows, their file). `task`: a multi-task run's task, which messages name."""
        rows, path, key = read_split(cfg.data, "train", cls, task, cfg.seed)
        return check_rows(cfg.data, rows, cls, None, path, key), path

    # ------------------------------------------------------------------ with a tokenizer and labels

    def model_labels(self) -> dict:
        """What the model config records of the labels (from_pretrained / from_config keywords)."""
        labels = {"num_labels": len(self.id2label), "id2label": self.id2label, "label2id": self.label2id}
        return {**labels, "problem_type": self.problem_type} if self.problem_type else labels

    def encode(self, rows):
        """Tokenized rows, with the task's `labels` when the label column is there."""
        raise NotImplementedError

    def training_examples(self, rows) -> int:
        """How many examples an epoch over `rows` trains on (`llmkit validate`'s plan): one a row."""
        return len(rows)

    def evaluation_data(self, split: str, task: str | None = None):
        rows, path, key = read_split(self.data, split, type(self), task, self.cfg.seed)
        self.evaluation_rows = check_rows(self.data, rows, type(self), self.label2id, path, key)
        return self.encode(self.evaluation_rows)

    def prediction_records(self, outputs: list) -> list[dict]:
        """The evaluated rows' inputs with their gold and predicted labels (and score), for --save-predictions."""
        fields = self.input_fields(self.data)
        return [{**{field: row[column] for field, column in fields.items()}, **self.prediction_record(output)}
                for row, output in zip(self.evaluation_rows, outputs)]

    def prediction_record(self, output) -> dict:
        """One example's eval output: gold, predicted (and score)."""
        raise NotImplementedError

    @classmethod
    def trained(cls, cfg: Config, source: str, tokenizer, kind: ModelKind, thorough: bool = False):
        model = load_trained_model(cfg, source, kind)
        return cls.with_model_config(cfg, tokenizer, model.config.to_dict()), model

    @classmethod
    def with_model_config(cls, cfg: Config, tokenizer, config: dict):
        return cls(cfg, tokenizer, {int(i): str(name) for i, name in config["id2label"].items()})

    @classmethod
    def input_fields(cls, data: DataSection) -> dict[str, str]:
        return {"text": data.text_column, **({"text_pair": data.text_pair_column} if data.text_pair_column else {})}
