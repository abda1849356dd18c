"""Bad rows, reported the same way for every reader and stage.

A row is bad when its reader could not read its line (llmkit.data.formats' PROBLEM: too many fields, not
JSON, no match for data.line_pattern) or, for a task, when the task cannot use it (an empty cell, a label
training never saw). The first one stops the run, named by the file's line number (its row number for a
format without lines: parquet, a JSON document, a hub dataset); with data.skip_bad_rows they are dropped and
summed up: `skipped 3 of 50 rows of train.tsv: 3 rows: column 'text' is empty (lines 52, 60, 71)`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmkit.console import say
from llmkit.data.formats import HIDDEN, LINE, PROBLEM
from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.config import DataSection

SHOWN_KINDS, SHOWN_LINES = 5, 5


def usable_rows(data: DataSection, dataset, path: str, key: str, problem: Callable[[dict], str | None] | None = None,
                columns: list[str] | None = None):
    """`dataset` without its bad rows and without LINE / PROBLEM. `problem(values)`: why a task cannot use a row
    (values of `columns` only), or None."""
    if problem is None and _no_reader_problems(dataset):
        return _without_hidden(dataset)
    bad = find_bad_rows(dataset, problem, columns, first_only=not data.skip_bad_rows)
    if bad and not data.skip_bad_rows:
        raise LlmkitError(f"{key}: {path} {next(iter(bad.values()))} (data.skip_bad_rows=true skips such rows)")
    if bad:
        say(f"{key}: skipped {len(bad)} of {len(dataset)} rows of {path}: {summary(bad.values())}")
        if len(bad) == len(dataset):
            raise LlmkitError(f"{key}: {path}: every row was skipped")
        dataset = dataset.select([i for i in range(len(dataset)) if i not in bad])
    return _without_hidden(dataset)


def find_bad_rows(dataset, problem: Callable[[dict], str | None] | None = None, columns: list[str] | None = None,
                  first_only: bool = False) -> dict[int, str]:
    """{row index: `line 52: why`} of the rows a reader or `problem` finds bad (the first one only if asked)."""
    bad: dict[int, str] = {}
    for index, values in enumerate(_rows(dataset, columns)):
        reason = values.get(PROBLEM) or (problem(values) if problem is not None else None)
        if reason is not None:
            bad[index] = f"{f'line {values[LINE]}' if LINE in values else f'row {index + 1}'}: {reason}"
            if first_only:
                break
    return bad


def summary(located: list[str] | tuple[str, ...]) -> str:
    """`line 52: column 'text' is empty`, ... -> `3 rows: column 'text' is empty (lines 52, 60, 71)`; the most
    common reasons first, a parenthesised detail of a reason left out."""
    places = defaultdict(list)
    for entry in located:
        where, _, reason = entry.partition(": ")
        places[reason.split(" (")[0]].append(where)
    kinds = sorted(places.items(), key=lambda kind: -len(kind[1]))
    parts = [f"{_rows_count(len(wheres))}: {reason} ({_places(wheres)})" for reason, wheres in kinds[:SHOWN_KINDS]]
    if len(kinds) > SHOWN_KINDS:
        rest = sum(len(wheres) for _, wheres in kinds[SHOWN_KINDS:])
        parts.append(f"{_rows_count(rest)} for {len(kinds) - SHOWN_KINDS} other reasons")
    return "; ".join(parts)


def _rows_count(count: int) -> str:
    return f"{count} row" + ("" if count == 1 else "s")


def _places(wheres: list[str]) -> str:
    """`line 52`, `line 60` -> `lines 52, 60` (the first few)."""
    unit = wheres[0].split()[0]
    numbers = [where.split()[1] for where in wheres[:SHOWN_LINES]]
    more = ", ..." if len(wheres) > SHOWN_LINES else ""
    return f"{unit}s {', '.join(numbers)}{more}" if len(wheres) > 1 else f"{unit} {numbers[0]}"


def _no_reader_problems(dataset) -> bool:
    """None in the whole table (a selection of it then has none either)."""
    table = dataset.data
    return PROBLEM not in dataset.column_names or table.column(PROBLEM).null_count == table.num_rows


def _without_hidden(dataset):
    hidden = [c for c in HIDDEN if c in dataset.column_names]
    return dataset.remove_columns(hidden) if hidden else dataset


def _rows(dataset, columns: list[str] | None, batch_size: int = 1000):
    wanted = [c for c in dataset.column_names if c in HIDDEN or columns is None or c in columns]
    for batch in dataset.select_columns(wanted).iter(batch_size=batch_size):
        for j in range(len(batch[wanted[0]])):
            yield {c: batch[c][j] for c in wanted}
