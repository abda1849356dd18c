"""The line-based file formats, read into rows that keep their place in the file.

Every row carries the file's own 1-based line number (`LINE`, counting the header and blank lines, so it is
the number an editor shows) and, for a line the format cannot read, why (`PROBLEM`; its other cells are
empty). A bad line is a bad row like any other: it stops the run, named by its line, or is skipped with
data.skip_bad_rows (llmkit.data.bad_rows).

    csv / tsv   Python's csv module: quoted fields (csv) or none (tsv, as GLUE ships them); a header row
                names the columns, or data.column_names / 0, 1, ... do; a row with another number of fields
                is bad
    jsonl       one JSON object per line; its columns are the keys any object has
    text        one `text` row per non-blank line
    lines       data.line_pattern's named groups, from each non-blank line; a line it does not match is bad
    conll       a sentence per block of `token ... tag` lines (space- or tab-separated); -DOCSTART- lines
                are breaks; data.token_field / data.tag_field pick the fields
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator

from llmkit.errors import LlmkitError

LINE, PROBLEM = "__line__", "__problem__"
HIDDEN = (LINE, PROBLEM)  # columns of llmkit's own, never a user's
DOCSTART = "-DOCSTART-"


def open_text(path: str, encoding: str):
    """A text file in `encoding`; a UTF-8 byte-order mark is dropped (Excel writes one)."""
    return open(path, encoding="utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding,
                newline="")


def row(line: int, values: dict, problem: str | None = None) -> dict:
    return {**values, LINE: line, PROBLEM: problem}


# ---------------------------------------------------------------------------------------------- csv / tsv

def _records(path: str, encoding: str, fmt: str, key: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record that is not blank."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents in one cell are fine
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ","}
    with open_text(path, encoding) as f:
        reader = csv.reader(f, **options)
        end = 0
        try:
            for fields in reader:
                start, end = end + 1, reader.line_num
                if any(field.strip() for field in fields):
                    yield start, fields
        except csv.Error as e:
            raise LlmkitError(f"{key}: {path} line {reader.line_num}: cannot read it as {fmt.upper()} ({e})") from None


def table_columns(path: str, encoding: str, fmt: str, key: str, header: bool, column_names: list[str] | None):
    """The columns of a .csv / .tsv file: its header's names, data.column_names, or 0, 1, ... by position."""
    first = next(_records(path, encoding, fmt, key), None)
    if first is None:
        raise LlmkitError(f"{key}: {path} has no rows")
    if column_names is not None:
        return list(column_names)
    if not header:
        return [str(i) for i in range(len(first[1]))]
    names = [name.strip() or f"Unnamed: {i}" for i, name in enumerate(first[1])]
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise LlmkitError(f"{key}: {path} line {first[0]}: the header names column {repeated!r} twice")
    return names


def table_rows(path: str, encoding: str, fmt: str, key: str, header: bool, columns: list[str]) -> Iterator[dict]:
    records = _records(path, encoding, fmt, key)
    if header:
        next(records)
    width = len(columns)
    what = "the header has" if header else "there are columns"
    for line, fields in records:
        if len(fields) != width:
            yield row(line, dict.fromkeys(columns), f"{_fields(len(fields))} where {what} {width}")
        else:
            yield row(line, dict(zip(columns, fields)))


def _fields(count: int) -> str:
    return f"{count} field" + ("" if count == 1 else "s")


# ---------------------------------------------------------------------------------------------- jsonl

def jsonl_columns(path: str, encoding: str) -> list[str]:
    """Every key of any object in the file, in the order first seen (a first pass over the file)."""
    keys: dict[str, None] = {}
    for _, value, _ in _json_lines(path, encoding):
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return list(keys)


def jsonl_rows(path: str, encoding: str, columns: list[str]) -> Iterator[dict]:
    for line, value, problem in _json_lines(path, encoding):
        if problem is None and not isinstance(value, dict):
            problem = f"is a JSON {type(value).__name__}, not an object of columns"
        yield row(line, {c: value.get(c) for c in columns} if problem is None else dict.fromkeys(columns), problem)


def _json_lines(path: str, encoding: str):
    with open_text(path, encoding) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text), None
            except json.JSONDecodeError as e:
                yield line, None, f"not valid JSON ({e.msg}, column {e.colno})"


def is_json_lines(path: str, encoding: str) -> bool:
    """A .json file that holds an object per line (as many datasets ship them), not one JSON document."""
    with open_text(path, encoding) as f:
        first = next((text for text in f if text.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


# ---------------------------------------------------------------------------------------------- text, lines

def text_rows(path: str, encoding: str) -> Iterator[dict]:
    with open_text(path, encoding) as f:
        for line, text in enumerate(f, start=1):
            if text.strip():
                yield row(line, {"text": text.rstrip("\r\n")})


def pattern_columns(pattern: str) -> list[str]:
    return list(re.compile(pattern).groupindex)


def pattern_rows(path: str, encoding: str, pattern: str) -> Iterator[dict]:
    regex = re.compile(pattern)
    columns = list(regex.groupindex)
    with open_text(path, encoding) as f:
        for line, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            match = regex.match(text)
            yield (row(line, match.groupdict()) if match else
                   row(line, dict.fromkeys(columns), f"does not match data.line_pattern: {_clip(text)!r}"))


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


# ---------------------------------------------------------------------------------------------- conll

def conll_lines(path: str, encoding: str):
    """(line number, fields) of each token line, and (line number, None) at sentence breaks: blank or
    whitespace-only lines (WNUT-17 separates most sentences with a lone tab) and -DOCSTART- lines."""
    with open_text(path, encoding) as f:
        for line, text in enumerate(f, start=1):
            fields = text.split()
            yield line, (fields if fields and fields[0] != DOCSTART else None)


def check_conll_fields(path: str, encoding: str, key: str, token_field: int, tag_field: int) -> int:
    """The number of fields of the file's first token line, which data.token_field / tag_field must be within."""
    width = next((len(fields) for _, fields in conll_lines(path, encoding) if fields), 0)
    if width == 0:
        raise LlmkitError(f"{key}: {path} has no token lines")
    if width < 2:
        raise LlmkitError(f"{key}: {path} holds one field per line; CoNLL lines are `token ... tag`")
    for name, index in (("token_field", token_field), ("tag_field", tag_field)):
        if not -width <= index < width:
            raise LlmkitError(f"data.{name}: {index} is past the {width} fields of {path}'s token lines")
    return width


def conll_rows(path: str, encoding: str, token_field: int, tag_field: int, width: int) -> Iterator[dict]:
    """A {tokens, tags} row per sentence, at its first line; a line of another width makes it a bad row."""
    start, tokens, tags, problem = None, [], [], None
    for line, fields in conll_lines(path, encoding):
        if fields is None:
            if start is not None:
                yield _sentence(start, tokens, tags, problem)
            start, tokens, tags, problem = None, [], [], None
            continue
        if start is None:
            start = line
        if len(fields) != width and problem is None:
            start, problem = line, f"{_fields(len(fields))} where the file's token lines have {width}"
        elif problem is None:
            tokens.append(fields[token_field])
            tags.append(fields[tag_field])
    if start is not None:
        yield _sentence(start, tokens, tags, problem)


def _sentence(line: int, tokens: list[str], tags: list[str], problem: str | None) -> dict:
    return row(line, {"tokens": tokens, "tags": tags} if problem is None else {"tokens": None, "tags": None}, problem)
