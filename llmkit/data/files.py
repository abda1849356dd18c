"""Read a data file of any supported format into a `datasets.Dataset`, failing with one clear line.

data.format says how a file is read; `auto` goes by its extension: .csv, .tsv (unquoted, as GLUE ships them),
.json / .jsonl (SQuAD-format JSON: a row per question, llmkit.data.squad), .parquet, .txt (a row per line; a
corpus's documents per `document_boundary`) and .conll / .bio / .iob / .iob2; `lines` (data.line_pattern) has
none. A hub dataset name (`NAME` or `NAME:CONFIG`) is read when online. Rows of the line-based formats keep
their line number (llmkit.data.formats).
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.data import formats, parallel, squad
from llmkit.data.bad_rows import usable_rows
from llmkit.data.formats import HIDDEN, LINE, PROBLEM
from llmkit.errors import LlmkitError
from llmkit.paths import split_of

if TYPE_CHECKING:
    from llmkit.config import DataSection

SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
                  ".txt": "text", ".text": "text", ".conll": "conll", ".bio": "conll", ".iob": "conll", ".iob2": "conll"}


def file_format(path: str, fmt: str = "auto") -> str | None:
    """The format a file is read in: data.format, or by its extension for `auto` (None: an unknown one)."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower()) if fmt == "auto" else fmt


def is_text(data: DataSection, path: str) -> bool:
    return file_format(path, data.format) == "text"


def read_rows(data: DataSection, path: str, key: str, fmt: str | None = None):
    """read_table's rows without the bad ones (which stop the run unless data.skip_bad_rows) or line numbers."""
    return usable_rows(data, read_table(data, path, key, fmt), path, key)


def read_table(data: DataSection, path: str, key: str, fmt: str | None = None):
    """Load `path` (named by config key `key` in messages) as data.format (or `fmt`) says, in data.encoding.
    Rows of the line-based formats carry LINE and PROBLEM (llmkit.data.formats)."""
    fmt = file_format(path, data.format if fmt is None else fmt)
    if fmt == "parallel":  # two line-aligned files named by their stem
        return parallel.read_parallel(data, path, key)
    if not os.path.exists(path) and not (Path(path).suffix or os.path.isabs(path) or path.startswith(".")):
        return _read_hub(path, key)
    if fmt is None:
        _check_file(path, key, None)
        raise LlmkitError(f"{key}: {path}: unsupported file type {Path(path).suffix or '(none)'}; use .txt, .csv, "
                          ".tsv, .json, .jsonl, .parquet or .conll, or set data.format (csv, tsv, json, jsonl, "
                          "parquet, text, conll or lines)")
    _check_file(path, key, None if fmt == "parquet" else data.encoding)
    if fmt == "json" and squad.is_squad(path, data.encoding):  # articles of paragraphs: a row per question
        dataset = squad.read_squad(path, key, data.encoding)
    elif fmt == "parquet" or (fmt == "json" and not formats.is_json_lines(path, data.encoding)):
        dataset = _load_builder(fmt, path, key, data.encoding)
    else:
        dataset = _generate(fmt, path, key, data)
    if len(dataset) == 0:
        raise LlmkitError(f"{key}: {path} has no rows")
    return dataset


def _generate(fmt: str, path: str, key: str, data: DataSection):
    """Rows from llmkit.data.formats' reader of `fmt`, cached by datasets under the file's size and time."""
    import datasets

    text, strings = datasets.Value("string"), datasets.List(datasets.Value("string"))
    options = {"fmt": fmt, "path": path, "key": key, "encoding": data.encoding}
    if fmt in ("csv", "tsv"):
        columns = formats.table_columns(path, data.encoding, fmt, key, data.header, data.column_names)
        options.update(header=data.header, columns=columns)
        features = dict.fromkeys(columns, text)
    elif fmt == "conll":
        width = formats.check_conll_fields(path, data.encoding, key, data.token_field, data.tag_field)
        options.update(token_field=data.token_field, tag_field=data.tag_field, width=width)
        features = {"tokens": strings, "tags": strings}
    elif fmt == "lines":
        if data.line_pattern is None:
            raise LlmkitError("data.line_pattern: data.format: lines reads each line with this regular expression")
        options.update(pattern=data.line_pattern)
        features = dict.fromkeys(formats.pattern_columns(data.line_pattern), text)
    elif fmt == "jsonl" or fmt == "json":
        options.update(fmt="jsonl")
        features = None  # as the values are
    else:
        features = {"text": text}
    if features is not None:
        features = datasets.Features({**features, LINE: datasets.Value("int64"), PROBLEM: text})
    stat = os.stat(path)
    try:
        return datasets.Dataset.from_generator(_rows_of, features=features, gen_kwargs={
            "options": options, "version": (stat.st_size, stat.st_mtime_ns)})
    except Exception as e:  # a reader's own error, or pyarrow's on values of mixed types
        raise _llmkit_error(e) or LlmkitError(f"{key}: cannot read {path}: {_root_cause(e)}") from None


def _rows_of(options: dict, version) -> Iterator[dict]:
    o = options
    fmt, path, encoding = o["fmt"], o["path"], o["encoding"]
    if fmt in ("csv", "tsv"):
        return formats.table_rows(path, encoding, fmt, o["key"], o["header"], o["columns"])
    if fmt == "conll":
        return formats.conll_rows(path, encoding, o["token_field"], o["tag_field"], o["width"])
    if fmt == "lines":
        return formats.pattern_rows(path, encoding, o["pattern"])
    if fmt == "jsonl":
        # the keys of every object: a pass of their own, only when datasets has no cached copy of the file
        return formats.jsonl_rows(path, encoding, formats.jsonl_columns(path, encoding))
    return formats.text_rows(path, encoding)


def _load_builder(fmt: str, path: str, key: str, encoding: str):
    """A .parquet file, or a .json document (a list of records or an object of columns), by datasets."""
    import datasets

    kwargs = {} if fmt == "parquet" else {"encoding": encoding}
    try:
        return datasets.load_dataset(fmt, data_files={"data": path}, split="data", **kwargs)
    except Exception as e:  # datasets wraps parser errors; report the innermost one
        raise LlmkitError(f"{key}: cannot parse {path}: {_root_cause(e)}") from None


def iter_documents(path: str, key: str, data: DataSection) -> Iterator[str]:
    """A corpus file's raw documents, streamed: a text file line by line as data.document_boundary says
    (whole only when a document is the `file`), a table batch by batch from its memory-mapped Arrow copy."""
    if is_text(data, path) and os.path.exists(path):
        _check_file(path, key, data.encoding)
        yield from _text_documents(path, data.document_boundary, data.encoding)
        return
    dataset = read_rows(data, path, key)
    require_columns(dataset, [data.text_column], path, key, data)
    yield from iter_texts(dataset, [data.text_column])


def require_columns(dataset, columns: list[str], path: str, key: str, data: DataSection | None = None) -> None:
    """Every needed column is there; otherwise name the missing one and what the file has."""
    import difflib

    have = [c for c in dataset.column_names if c not in HIDDEN]
    for column in columns:
        if column in have:
            continue
        hint = ""
        if have == ["text"] and data is not None and is_text(data, path):
            hint = _text_hint(path, data.encoding)
        elif len(have) == 1 and any(sep in have[0] for sep in ",\t;|"):
            hint = " (the header was read as a single column: is the delimiter right for the file type?)"
        elif match := difflib.get_close_matches(column, have, n=1):
            hint = f" (did you mean {match[0]!r}?)"
        elif any(_looks_like_data(name) for name in have):
            hint = (" (its first row looks like data, not column names: for a file without a header set "
                    "data.header: false, and name the columns with data.column_names or by index)")
        raise LlmkitError(f"{key}: {path} has no column {column!r}{hint}; its columns are {have}")


def _text_hint(path: str, encoding: str) -> str:
    """What a text file read as one `text` per line may be instead, from its first lines."""
    with formats.open_text(path, encoding) as f:
        lines = [line.split() for _, line in zip(range(200), f)]
    token_lines = [fields for fields in lines if fields]
    widths = {len(fields) for fields in token_lines}
    if len(widths) == 1 and widths.pop() >= 2 and len(token_lines) < len(lines):
        return (" (its lines look like CoNLL columns, `token ... tag` with blank lines between sentences: "
                "set data.format: conll)")
    return (" (a text file is one `text` row per line; for a label inside each line set data.format: lines and "
            "data.line_pattern, e.g. '^(?P<label>\\S+)\\t(?P<text>.+)$')")


def _looks_like_data(name: str) -> bool:
    """A header cell that is a number, a sentence, or pandas' name for an empty one."""
    try:
        float(name)
        return True
    except ValueError:
        return name.startswith("Unnamed: ") or len(name.split()) > 3 or len(name) > 40


def first_rows(dataset, limit: int | None):
    """The first `limit` rows (all when None), as Hugging Face's example scripts take max_*_samples."""
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def iter_texts(dataset, columns: list[str], batch_size: int = 1000):
    """Stream the strings of some columns, batch by batch (never the whole column in memory)."""
    for batch in dataset.iter(batch_size=batch_size):
        for column in columns:
            yield from (t for t in batch[column] if t)


def _text_documents(path: str, document_boundary: str, encoding: str) -> Iterator[str]:
    with formats.open_text(path, encoding) as f:
        if document_boundary == "file":
            yield f.read()
        elif document_boundary == "line":
            yield from f
        elif document_boundary == "sentence":
            for line in f:
                yield from sentences(line)
        else:  # blocks of lines between blank lines; datasets' own paragraph mode misses blank lines
            block = []  # holding spaces (all of WikiText's)
            for line in f:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield "\n".join(block)
                    block = []
            if block:
                yield "\n".join(block)


def sentences(text: str) -> list[str]:
    """The text's lines, each split after . ! or ? (and a closing quote or bracket) before a capital or digit."""
    return [s for line in text.splitlines() for s in SENTENCE_END.split(line.strip()) if s]


def _check_file(path: str, key: str, encoding: str | None) -> None:
    """The file exists, is a readable non-empty file, and (unless binary: no encoding) text in `encoding`."""
    if not os.path.exists(path):
        raise LlmkitError(f"{key}: file not found: {path}")
    if os.path.isdir(path):
        raise LlmkitError(f"{key}: {path} is a folder, expected a data file")
    if not os.access(path, os.R_OK):
        raise LlmkitError(f"{key}: cannot read {path} (permission denied)")
    if os.path.getsize(path) == 0:
        raise LlmkitError(f"{key}: {path} is empty")
    if encoding is not None:
        check_encoding(path, key, encoding)


def check_encoding(path: str, key: str, encoding: str) -> None:
    """Fail on the first byte that is not text in `encoding`, with its line number; streamed in 1 MiB chunks."""
    decoder = codecs.getincrementaldecoder(encoding)()
    name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
    fix = "; set data.encoding to the file's encoding (e.g. latin-1 or cp1252)"
    lines_before = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line = lines_before + chunk.count(b"\n", 0, e.start) + 1
                raise LlmkitError(f"{key}: {path} line {line}: not {name} text "
                                  f"(byte {chunk[e.start:e.start + 1]!r}){fix}") from None
            lines_before += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise LlmkitError(f"{key}: {path}: not {name} text (truncated character at the end){fix}") from None


def _read_hub(name: str, key: str):
    import datasets

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LlmkitError(f"{key}: file not found: {name} (and HF_HUB_OFFLINE=1 rules out a hub dataset of that name)")
    dataset_name, _, config = name.partition(":")
    split = split_of(key)
    try:
        return datasets.load_dataset(dataset_name, config or None, split=split)
    except Exception as e:
        raise LlmkitError(f"{key}: {name} is neither a local file nor a loadable hub dataset: {_root_cause(e)}") from None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".strip()


def _llmkit_error(e: BaseException) -> LlmkitError | None:
    """The LlmkitError a reader raised inside datasets' generator, which wraps it."""
    while e is not None and not isinstance(e, LlmkitError):
        e = e.__cause__ or e.__context__
    return e
