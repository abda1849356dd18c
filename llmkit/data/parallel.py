"""Two line-aligned text files as one table (`data.format: parallel`): a split's file names their common stem
(`train` -> `train.en` + `train.de`, the suffixes data.source_suffix / data.target_suffix), and line N of one is
the translation of line N of the other (Multi30k's layout). Rows are {source_column, target_column}, with the
line number; a line empty on one side only is a bad row. Files of different lengths are misaligned: one error
naming both and their line counts, and the first line where one side is empty (where they likely slipped).

An existing file named by itself (infer's `--input test.en`) is the source side alone.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from llmkit.data.formats import LINE, PROBLEM, open_text
from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.config import DataSection


def parallel_paths(data: DataSection, stem: str) -> tuple[str, str]:
    return f"{stem}.{data.source_suffix}", f"{stem}.{data.target_suffix}"


def read_parallel(data: DataSection, stem: str, key: str):
    """The rows of the pair of files `stem` names (or of the one file `stem`, as sources only)."""
    import datasets

    from llmkit.data.files import _check_file as check_file

    if os.path.isfile(stem):
        check_file(stem, key, data.encoding)
        sources = _lines(stem, data.encoding)
        return datasets.Dataset.from_dict({data.source_column: sources, LINE: list(range(1, len(sources) + 1)),
                                           PROBLEM: [None if s else "the line is empty" for s in sources]})
    source_path, target_path = parallel_paths(data, stem)
    for path in (source_path, target_path):
        check_file(path, key, data.encoding)
    sources, targets = _lines(source_path, data.encoding), _lines(target_path, data.encoding)
    if len(sources) != len(targets):
        raise LlmkitError(f"{key}: {source_path} has {len(sources)} lines but {target_path} has {len(targets)}: "
                          f"the files are not line-aligned{_first_one_sided(sources, targets)}")
    problems = [_one_sided(s, t) for s, t in zip(sources, targets)]
    return datasets.Dataset.from_dict({data.source_column: sources, data.target_column: targets,
                                       LINE: list(range(1, len(sources) + 1)), PROBLEM: problems})


def _lines(path: str, encoding: str) -> list[str]:
    with open_text(path, encoding) as f:
        return [line.rstrip("\r\n").strip() for line in f]


def _one_sided(source: str, target: str) -> str | None:
    if bool(source) == bool(target):
        return None if source else "both sides are empty"
    return f"the {'target' if source else 'source'} side is empty"


def _first_one_sided(sources: list[str], targets: list[str]) -> str:
    line = next((n for n, (s, t) in enumerate(zip(sources, targets), start=1) if bool(s) != bool(t)), None)
    return "" if line is None else f" (line {line} is empty on one side only)"
