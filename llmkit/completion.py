"""Shell completion of `key.sub=value` overrides: the config's keys, read from its schema, with their docs.

    llmkit finetune configs/tiny/finetune.yaml train.lea<TAB>   ->  train.learning_rate=
    llmkit finetune configs/tiny/finetune.yaml train.optim=<TAB> ->  train.optim=adamw  train.optim=sgd ...

Only the sections of the config's kind are offered: a fine-tuning config gets no `pretrain.*` keys.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import typer

HELP_LENGTH = 70
# A sentence ends at a full stop before a space, but not the one in "e.g." or "i.e.".
SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.(?:\s|$)")


def complete_override(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Typer's autocompletion callback for the OVERRIDES argument."""
    word, earlier_part = _rejoin_bash_split(ctx.params.get("overrides") or [], incomplete)
    completions = override_completions(word, ctx.params.get("config"), ctx.info_name)
    return [(value[len(earlier_part):], help) for value, help in completions]


def _rejoin_bash_split(typed: list[str], incomplete: str) -> tuple[str, str]:
    """The override being completed, and the part of it already among the `typed` words (left out of a completion).

    Bash splits words at `=` and click drops a lone `=` being completed: `key=` arrives as `key` + incomplete "",
    `key=va` as `key`, `=` + incomplete `va`. A word without `=` is no override, so it is such a key.
    """
    if len(typed) >= 2 and typed[-1] == "=":
        return f"{typed[-2]}={incomplete}", typed[-2] + "="
    if typed and "=" not in typed[-1]:
        return f"{typed[-1]}={incomplete}", typed[-1] + "="
    return incomplete, ""


def override_completions(incomplete: str, config=None, stage: str | None = None) -> list[tuple[str, str]]:
    """(word, help) pairs completing `incomplete`: `key=` for a partial key, `key=choice` for a Literal key."""
    try:
        fields = config_fields(config_kind(config, stage))
    except Exception:  # an exception here would print a traceback into the user's shell
        return []
    key, equals, value = incomplete.partition("=")
    if equals:
        choices = literal_choices(fields[key].annotation) if key in fields else []
        return [(f"{key}={choice}", "") for choice in choices if choice.startswith(value)]
    return [(f"{name}=", first_sentence(field.description)) for name, field in fields.items()
            if name.startswith(incomplete)]


def config_kind(config, stage: str | None) -> str | None:
    """The config's kind ("pretrain" or "finetune") as load_config takes it for this stage, its bases included;
    None if unreadable."""
    from llmkit.config.compose import compose
    from llmkit.config.loading import PRETRAIN_STAGES
    from llmkit.errors import LlmkitError

    if config is None:
        return None
    try:
        raw = compose(Path(config)).tree
    except LlmkitError:  # not there, not YAML, not a mapping, or a base that is not
        return None
    if "finetune" in raw or "pretrain" in raw:
        return "finetune" if "finetune" in raw else "pretrain"
    return "pretrain" if stage in PRETRAIN_STAGES else "finetune"


def config_fields(kind: str | None = None) -> dict:
    """{"section.key": FieldInfo} of every settable key, without the other kind's section."""
    from llmkit.config import Config

    other_section = {"finetune": "pretrain", "pretrain": "finetune"}.get(kind)
    return {name: field for name, field in _leaf_fields(Config)
            if name.split(".")[0] != other_section}


def _leaf_fields(model, prefix: str = ""):
    for name, field in model.model_fields.items():
        section = _section_model(field.annotation)
        if section is None:
            yield prefix + name, field
        else:
            yield from _leaf_fields(section, f"{prefix}{name}.")


def _section_model(annotation):
    """The model of a `Section` or `Section | None` annotation; None for a value (dicts of sections included)."""
    from pydantic import BaseModel

    for candidate in (annotation, *_union_members(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def literal_choices(annotation) -> list[str]:
    """The values of a Literal annotation, through Annotated and Optional; [] for any other type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    if origin is typing.Annotated:
        return literal_choices(typing.get_args(annotation)[0])
    return [choice for member in _union_members(annotation) for choice in literal_choices(member)]


def _union_members(annotation) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def first_sentence(description: str | None) -> str:
    """A field docstring's first sentence on one line, cut to HELP_LENGTH characters."""
    text = " ".join((description or "").split())
    end = SENTENCE_END.search(text)
    sentence = text[:end.start()] if end else text
    return sentence if len(sentence) <= HELP_LENGTH else sentence[:HELP_LENGTH - 1].rstrip() + "…"
