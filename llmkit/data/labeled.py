"""Labelled rows for fine-tuning: read a split's file and check its rows, as the task says.

The task class (llmkit.objectives) names the columns, says what is wrong with a row and how its label
cell is read; this module only reads, counts and reports, the same for every task.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from llmkit.console import say
from llmkit.data.files import first_rows, read_table, require_columns
from llmkit.errors import LlmkitError
from llmkit.paths import split_file, split_key

if TYPE_CHECKING:
    from llmkit.config import DataSection


def read_split(data: DataSection, split: str, task_class, task: str | None = None):
    """(rows, path, key) of a split (`train`, `validation`, `test`), the first N rows only when configured.
    `task`: the name of a multi-task run's task, which errors then name."""
    key = split_key(split, task)
    path = split_file(data, split)
    if path is None:
        raise LlmkitError(f"{key}: required for this stage")
    dataset = read_table(data, path, key)
    require_columns(dataset, task_class.text_columns(data) + [task_class.label_column(data)], path, key)
    dataset = first_rows(dataset, data.max_train_samples if split == "train" else data.max_eval_samples)
    return task_class.normalized(data, dataset), path, key


def check_rows(data: DataSection, dataset, task_class, label2id: dict[str, int] | None, path: str, key: str):
    """Rows a task cannot use (empty cells, labels training never saw, non-numeric targets, token/tag
    counts that differ) stop the run naming the first one, or with data.skip_bad_rows are dropped
    and reported with their count and reasons. Call with label2id=None on the training split."""
    from collections import Counter

    label = task_class.label_column(data)
    columns = [c for c in task_class.text_columns(data) + [label] if c in dataset.column_names]
    bad: dict[int, str] = {}
    for row, values in enumerate(_rows(dataset.select_columns(columns))):
        reason = next((f"column {c!r} is empty" for c in columns if values[c] is None or values[c] == ""), None)
        if reason is None and label in values:
            reason = task_class.row_problem(data, values, label2id)
        if reason is not None:
            if not data.skip_bad_rows:
                raise LlmkitError(f"{key}: {path} row {row + 1}: {reason} (data.skip_bad_rows=true skips such rows)")
            bad[row] = reason
    if not bad:
        return dataset
    kinds = Counter(re.sub(r"'[^']*'|\d+", "_", reason.split(" (")[0]) for reason in bad.values())
    examples = list(dict.fromkeys(reason.split(" (")[0] for reason in bad.values()))[:3]
    say(f"{key}: skipped {len(bad)} of {len(dataset)} rows of {path}: "
        + "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common())
        + f" (first: row {min(bad) + 1}; e.g. {'; '.join(examples)})")
    if len(bad) == len(dataset):
        raise LlmkitError(f"{key}: {path}: every row was skipped")
    return dataset.select([i for i in range(len(dataset)) if i not in bad])


def label_list(data: DataSection, value) -> list[str]:
    """A cell of several labels: a list, or one string split on data.label_separator."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(data.label_separator) if part.strip()]


def _rows(dataset, batch_size: int = 1000):
    for batch in dataset.iter(batch_size=batch_size):
        columns = list(batch)
        for j in range(len(batch[columns[0]])):
            yield {c: batch[c][j] for c in columns}
