"""`llmkit config`: the resolved config as a run saves it (bases merged, overrides applied, every default filled
in), and with --explain each value followed by the file, `override` or `default` it came from.

    llmkit config configs/finetune/sst2.yaml --explain
      num_train_epochs: 2                             # configs/finetune/sst2.yaml
      weight_decay: 0.01                              # configs/finetune/_base.yaml
"""

from __future__ import annotations

import os

import yaml

from llmkit.config.compose import Composed
from llmkit.config.loading import load_composed, resolved_yaml

COMMENT_COLUMN = 48  # where the origins line up; a longer line gets its origin after it


def config_text(path: str | os.PathLike, overrides: list[str], explain: bool = False) -> str:
    cfg, composed = load_composed(path, overrides)
    text = resolved_yaml(cfg)
    return explained(text, composed) if explain else text


def explained(text: str, composed: Composed) -> str:
    """The YAML text with a trailing comment naming each value's origin; it still parses to the same config."""
    lines = text.splitlines()
    for key, line in _value_lines(yaml.compose(text)):
        lines[line] = f"{lines[line]:<{COMMENT_COLUMN}}  # {composed.origin_of(key) or 'default'}"
    return "\n".join(lines) + "\n"


def _value_lines(mapping: yaml.MappingNode, prefix: str = ""):
    """(section.key, line number) of each value in a YAML mapping, walking into sections. The line is where a
    comment can go: a block list's key line (its items follow on their own lines), else the value's last line
    (a long string wraps, and a comment inside it would be part of the string)."""
    for key, value in mapping.value:
        name = prefix + key.value
        if isinstance(value, yaml.MappingNode) and value.value:
            yield from _value_lines(value, name + ".")
        elif value.start_mark.line > key.start_mark.line:
            yield name, key.start_mark.line
        else:
            yield name, value.end_mark.line
