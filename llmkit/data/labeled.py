"""Labelled rows for fine-tuning: read a split's file and check its rows, as the task says.

The task class (llmkit.objectives) names the columns, says what is wrong with a row and how its label
cell is read; this module only reads, counts and reports, the same for every task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.console import say
from llmkit.data.bad_rows import usable_rows
from llmkit.data.files import first_rows, read_table, require_columns
from llmkit.errors import LlmkitError
from llmkit.paths import split_file, split_key

if TYPE_CHECKING:
    from llmkit.config import DataSection


def read_split(data: DataSection, split: str, task_class, task: str | None = None, seed: int = 0):
    """(rows, path, key) of a split (`train`, `validation`, `test`), the first N rows only when configured.
    With data.validation_split_percentage (and no validation_file) the validation rows are a seeded share of
    the training file's, stratified by label for a task that has one label per row, and not trained on.
    `task`: the name of a multi-task run's task, which errors then name."""
    held_out = has_held_out(data) and split in ("train", "validation")
    source = "train" if held_out else split
    key, path = split_key(source, task), split_file(data, source)
    if path is None:
        raise LlmkitError(f"{key}: required for this stage")
    dataset = read_table(data, path, key)
    groups = [data.validation_group_column] if held_out and data.validation_group_column is not None else []
    require_columns(dataset, task_class.text_columns(data) + [task_class.label_column(data)] + groups, path, key, data)
    if held_out:
        dataset = _held_out(data, dataset, task_class, seed, split, key)
    dataset = first_rows(dataset, data.max_train_samples if split == "train" else data.max_eval_samples)
    return task_class.normalized(data, dataset, key), path, key


def has_held_out(data: DataSection) -> bool:
    """Validation rows are held out of the training file (fine-tuning, data.validation_split_percentage)."""
    return data.validation_file is None and bool(data.validation_split_percentage)


def has_validation(data: DataSection) -> bool:
    return data.validation_file is not None or has_held_out(data)


def _held_out(data: DataSection, dataset, task_class, seed: int, split: str, key: str):
    """The training file's rows of `split`: all but a seeded share (train) or that share (validation)."""
    from collections import Counter

    from sklearn.model_selection import train_test_split

    if data.validation_group_column is not None:
        return _held_out_groups(data, dataset, seed, split, key)
    labels = [str(v) for v in dataset[task_class.label_column(data)]] if task_class.stratified else None
    share = data.validation_split_percentage / 100
    size = max(1, round(len(dataset) * share))
    if len(dataset) < 2:
        raise LlmkitError(f"{key}: data.validation_split_percentage holds out rows of a file of {len(dataset)}")
    counts = Counter(labels or ())
    stratify = labels if labels and min(counts.values()) >= 2 and size >= len(counts) else None
    train, validation = train_test_split(range(len(dataset)), test_size=size, random_state=seed, stratify=stratify)
    if split == "train":
        how = "stratified by label" if stratify else "at random" + (
            " (a label with one row, or fewer held-out rows than labels, rules out stratifying)" if labels else "")
        say(f"{key}: {size} of {len(dataset)} rows held out for validation ({data.validation_split_percentage:g}%, "
            f"{how}, seed {seed})")
    return dataset.select(sorted(train if split == "train" else validation))


def _held_out_groups(data: DataSection, dataset, seed: int, split: str, key: str):
    """The rows of `split` when whole groups (data.validation_group_column) are held out: a seeded share of
    the groups, with every row of each."""
    from sklearn.model_selection import GroupShuffleSplit

    column = data.validation_group_column
    groups = [str(v) for v in dataset[column]]
    count = len(set(groups))
    if count < 2:
        raise LlmkitError(f"{key}: data.validation_group_column: column {column!r} has {count} group; holding out "
                          "whole groups needs two or more")
    size = min(count - 1, max(1, round(count * data.validation_split_percentage / 100)))
    train, validation = next(GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
                             .split(groups, groups=groups))
    if split == "train":
        say(f"{key}: {size} of {count} groups of column {column!r} ({len(validation)} of {len(dataset)} rows) held "
            f"out for validation ({data.validation_split_percentage:g}% of the groups, seed {seed})")
    return dataset.select(sorted(train if split == "train" else validation))


def check_rows(data: DataSection, dataset, task_class, label2id: dict[str, int] | None, path: str, key: str):
    """Rows a task cannot use (a bad line, empty cells, labels training never saw, non-numeric targets,
    token/tag counts that differ) stop the run naming the first one's line, or with data.skip_bad_rows are
    dropped and reported (llmkit.data.bad_rows). Call with label2id=None on the training split."""
    problem, columns = task_row_problem(data, dataset, task_class, label2id)
    return usable_rows(data, dataset, path, key, problem, columns)


def task_row_problem(data: DataSection, dataset, task_class, label2id: dict[str, int] | None):
    """(why a row is of no use to the task or None, the columns that function reads)."""
    label = task_class.label_column(data)
    columns = [c for c in task_class.text_columns(data) + [label] if c in dataset.column_names]

    def problem(values: dict) -> str | None:
        empty = next((f"column {c!r} is empty" for c in columns if values[c] is None or values[c] == ""), None)
        return empty or (task_class.row_problem(data, values, label2id) if label in values else None)

    return problem, columns


def label_list(data: DataSection, value) -> list[str]:
    """A cell of several labels: a list, or one string split on data.label_separator."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(data.label_separator) if part.strip()]

