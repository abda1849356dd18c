"""`infer`'s inputs, streamed in chunks of examples: lines of a .txt file or of stdin, or the rows of any
data file (.jsonl, .csv, .tsv, ...; read memory-mapped). Which fields an example has, and which columns
they come from, is the family's (input_fields, from_line)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.data.files import file_format, read_rows, require_columns
from llmkit.data.formats import open_text
from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.config import DataSection

KEY = "--input"


def input_chunks(path: str, family, data: DataSection, size: int) -> Iterator[list[dict]]:
    """Lists of at most `size` examples, in input order; fails on an input with no text at all."""
    empty = True
    fmt = "text" if path == "-" else file_format(path) or data.format  # by extension first: texts to label
    examples = _lines(path, family, data) if fmt == "text" else _rows(path, fmt, family.input_fields(data), size, data)
    chunk = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == size:
            yield chunk
            empty, chunk = False, []
    if chunk:
        yield chunk
    elif empty:
        raise LlmkitError(f"{KEY}: {path} holds no text")


def _lines(path: str, family, data: DataSection) -> Iterator[dict]:
    fields = family.input_fields(data)
    if len(fields) > 1:
        raise LlmkitError(f"{KEY}: this model reads {len(fields)} fields ({', '.join(fields.values())}); give a "
                          ".jsonl/.csv/.tsv file with those columns")
    if path != "-" and not Path(path).is_file():
        raise LlmkitError(f"{KEY}: file not found: {path}")
    stream = sys.stdin if path == "-" else open_text(path, data.encoding)
    number = 0
    try:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield family.from_line(line.strip())
    except UnicodeDecodeError as e:
        raise LlmkitError(f"{KEY}: {path} line {number + 1}: not {data.encoding} text ({e.reason}); set "
                          "data.encoding to the file's encoding") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def _rows(path: str, fmt: str, fields: dict[str, str], size: int, data: DataSection) -> Iterator[dict]:
    # headerless like the training data when data.header is false
    dataset = read_rows(data, path, KEY, fmt)
    require_columns(dataset, list(fields.values()), path, KEY, data)
    for batch in dataset.select_columns(list(fields.values())).iter(batch_size=size):
        columns = {field: batch[column] for field, column in fields.items()}
        for j in range(len(next(iter(columns.values())))):
            yield {field: list(v[j]) if isinstance(v[j], (list, tuple)) else str(v[j]) for field, v in columns.items()}
