"""Writes docs/config.md, the config reference, from the schema in llmkit/config/ (field docstrings).

    python scripts/gen_config_docs.py [--check]   # --check: exit 1 if docs/config.md is out of date
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "config.md"
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from llmkit.config import Config  # noqa: E402


def section_of(field) -> type[BaseModel] | None:
    """`pretrain: PretrainSection | None` -> PretrainSection; `tasks: dict[str, TaskSection] | None` -> TaskSection."""
    kinds = [field.annotation]
    while kinds:
        kind = kinds.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
        kinds += typing.get_args(kind)
    return None


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    return "null" if annotation is type(None) else getattr(origin or annotation, "__name__", str(annotation))


def default(value) -> str:
    if value is PydanticUndefined:
        return "required"
    return f"`{'null' if value is None else str(value).lower() if isinstance(value, bool) else value}`"


def cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


TOP_SECTIONS = {inner: name for name, f in Config.model_fields.items() if (inner := section_of(f)) is not None}


def default_cell(field, nested: bool) -> str:
    inner = section_of(field)
    if inner is None:
        return default(field.default)
    return f"keys of `{TOP_SECTIONS[inner]}:`" if nested and inner in TOP_SECTIONS else "see below"


KINDS = {"pretrain": "(pretraining configs only) ", "finetune": "(fine-tuning configs only) "}


def table(prefix: str, fields: dict, nested: bool = False) -> list[str]:
    rows = [f"| `{prefix}{name}` | {cell(type_name(f.annotation))} | {default_cell(f, nested)} | "
            f"{KINDS.get((f.json_schema_extra or {}).get('kind'), '')}{cell(f.description)} |"
            for name, f in fields.items()]
    return ["| key | type | default | description |", "|---|---|---|---|", *rows]


def section(prefix: str, model: type[BaseModel], description: str | None) -> list[str]:
    """A section's table, then one for each section nested in it (`finetune.lora`, `finetune.tasks.<name>`)."""
    lines = ["", f"## `{prefix}:` ({model.__name__})", ""]
    lines += [cell(description), ""] if description else []
    lines += table(f"{prefix}.", model.model_fields, nested=True)
    for name, field in model.model_fields.items():
        if (inner := section_of(field)) is not None and inner not in TOP_SECTIONS:
            keyed = typing.get_origin(field.annotation) is dict or "dict[" in str(field.annotation)
            lines += section(f"{prefix}.{name}" + (".<name>" if keyed else ""), inner, None)
    return lines


# `base:` is read by the loader (llmkit/config/compose.py) before validation, so it is no schema field.
BASE_ROW = ("| `base` | str or list | none | Files this config builds on, each path relative to the file naming it: "
            "merged in order under it (a mapping key by key; a list, a value or null replaces). A base may have its "
            "own `base:`. Not in the saved `output_dir/config.yaml`. |")


def render() -> str:
    top = {name: f for name, f in Config.model_fields.items() if section_of(f) is None}
    lines = ["# Config reference", "",
             "<!-- Generated from llmkit/config/ by scripts/gen_config_docs.py; do not edit by hand. -->", "",
             "One YAML file per experiment, over the files its `base:` names; any key can be overridden on the "
             "command line as `key.sub=value`. `llmkit config CONFIG --explain` prints the resolved config and "
             "where each value came from.",
             "", "## Top level", "", *table("", top), BASE_ROW]
    for name, field in Config.model_fields.items():
        if (inner := section_of(field)) is not None:
            lines += section(name, inner, field.description)
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if DOC.exists() and DOC.read_text(encoding="utf-8") == text:
            return 0
        print("docs/config.md is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
        return 1
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
