"""What fine-tuning tasks share: labelled rows read from a split's file, checked, and numbered labels.

Labels may be strings or integers; they are kept as strings (`"0"`, `"positive"`) and numbered in
sorted order (numeric order when all are integers). The mapping is saved in the model config as
`id2label` / `label2id`, which is where evaluate and infer read it back from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmkit.data.labeled import check_rows, read_split
from llmkit.objectives.base import Family, ModelKind, load_trained_model

if TYPE_CHECKING:
    from llmkit.config import Config, DataSection


class Task(Family):
    """A fine-tuning task: a head trained on labelled rows."""

    peft_task_type: ClassVar[str]  # PEFT's TaskType for LoRA and prompt tuning
    problem_type: ClassVar[str | None] = None  # transformers' config.problem_type

    def __init__(self, cfg: Config, tokenizer, id2label: dict[int, str]):
        self.cfg, self.data, self.tokenizer, self.id2label = cfg, cfg.data, tokenizer, id2label
        self.label2id = {name: i for i, name in id2label.items()}

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
    def normalized(cls, data: DataSection, rows):
        """Rows as read, made ready to check and encode."""
        return rows

    @classmethod
    def row_problem(cls, data: DataSection, values: dict, label2id: dict[str, int] | None) -> str | None:
        """Why a row cannot be used, or None. Labels are checked against label2id when it is given."""
        if label2id is None:
            return None
        unseen = [name for name in cls.labels_of(data, values[cls.label_column(data)]) if name not in label2id]
        return f"label {unseen[0]!r} was not seen in training (the model knows {list(label2id)})" if unseen else None

    @classmethod
    def label_vocabulary(cls, data: DataSection, rows) -> dict[int, str]:
        """The training rows' labels, numbered in sorted order (numeric when all are integers)."""
        column = cls.label_column(data)
        names = {name for value in rows[column] for name in cls.labels_of(data, value)}
        ordered = sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else sorted(names)
        return dict(enumerate(ordered))

    @classmethod
    def training_rows(cls, cfg: Config, task: str | None = None):
        """(checked training rows, their file). `task`: a multi-task run's task, which messages name."""
        rows, path, key = read_split(cfg.data, "train", cls, task=task)
        return check_rows(cfg.data, rows, cls, None, path, key), path

    # ------------------------------------------------------------------ with a tokenizer and labels

    def model_labels(self) -> dict:
        """What the model config records of the labels (from_pretrained / from_config keywords)."""
        labels = {"num_labels": len(self.id2label), "id2label": self.id2label, "label2id": self.label2id}
        return {**labels, "problem_type": self.problem_type} if self.problem_type else labels

    def encode(self, rows):
        """Tokenized rows, with the task's `labels` when the label column is there."""
        raise NotImplementedError

    def evaluation_data(self, split: str, task: str | None = None):
        rows, path, key = read_split(self.data, split, type(self), task=task)
        return self.encode(check_rows(self.data, rows, type(self), self.label2id, path, key))

    @classmethod
    def trained(cls, cfg: Config, source: str, tokenizer, kind: ModelKind, thorough: bool = False):
        model = load_trained_model(cfg, source, kind)
        id2label = {int(i): str(name) for i, name in model.config.id2label.items()}
        return cls(cfg, tokenizer, id2label), model

    @classmethod
    def input_fields(cls, data: DataSection) -> dict[str, str]:
        return {"text": data.text_column, **({"text_pair": data.text_pair_column} if data.text_pair_column else {})}
