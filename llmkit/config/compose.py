"""A config's layers merged into one tree: its bases (`base:`), the file itself, then `key.sub=value` overrides.

    # configs/finetune/sst2.yaml
    base: _base.yaml        # or a list, merged in order; each path relative to the file that names it

The tree remembers which file (or override) set each value: errors name it, `llmkit config --explain` shows it.
A mapping merges key by key; anything else (a list, a value, null) replaces what came before.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.errors import LlmkitError

OVERRIDE = "override"  # the origin of a value set on the command line


@dataclass
class Composed:
    """The merged config tree, and who set each of its values: {"section.key": file shown as named, or OVERRIDE}."""

    tree: dict = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def origin_of(self, key: str) -> str | None:
        """The file or override that set `key` (or a list or value above it, for a key inside that); None: a default."""
        parts = key.split(".") if key else []
        for n in range(len(parts), 0, -1):
            above = ".".join(parts[:n])
            if above in self.origins and (n == len(parts) or not isinstance(self._value_at(parts[:n]), dict)):
                return self.origins[above]
        return None

    def merge(self, layer: dict, origin: str) -> None:
        """Merge a later file's tree over this one."""
        if isinstance(layer.get("model"), dict):
            self._drop_replaced_model_source(set(layer["model"]))
        self._merge_into(self.tree, layer, origin, "")

    def apply_overrides(self, overrides: list[str]) -> None:
        """The `key.sub=value` overrides, in order, over the files: the last layer."""
        parsed = [_parse_override(item) for item in overrides]
        self._drop_replaced_model_source({keys[1] for keys, _ in parsed if len(keys) > 1 and keys[0] == "model"})
        for keys, value in parsed:
            self._override(keys, value)

    def _override(self, keys: list[str], value: Any) -> None:
        """Set one override, making the sections on its way that are missing or null."""
        node = self.tree
        for i, key in enumerate(keys[:-1]):
            if node.get(key) is None:
                node[key] = {}
                self.origins.pop(".".join(keys[: i + 1]), None)
            if not isinstance(node[key], dict):
                raise LlmkitError(f"override {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a section")
            node = node[key]
        self._replace(node, keys[-1], ".".join(keys), value, OVERRIDE)

    def _merge_into(self, target: dict, layer: dict, origin: str, prefix: str) -> None:
        for key, value in layer.items():
            path = prefix + key
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                self.origins.pop(path, None)  # an empty section that now gets keys
                self._merge_into(target[key], value, origin, path + ".")
            else:
                self._replace(target, key, path, value, origin)

    def _replace(self, node: dict, key: str, path: str, value: Any, origin: str) -> None:
        node[key] = copy.deepcopy(value)  # a YAML alias is one object in two places: merging into one changes both
        self._forget(path)
        leaves = flatten(value, path + ".") if isinstance(value, dict) and value else {path: value}
        self.origins.update(dict.fromkeys(leaves, origin))

    def _drop_replaced_model_source(self, layer_keys: set[str]) -> None:
        """A later layer naming a model (model.name_or_path) replaces an earlier from-scratch recipe (model.config),
        and the other way round; one layer giving both is still an error."""
        model = self.tree.get("model")
        if not isinstance(model, dict):
            return
        for given, replaced in (("name_or_path", "config"), ("config", "name_or_path")):
            if given in layer_keys and replaced not in layer_keys and replaced in model:
                del model[replaced]
                self._forget(f"model.{replaced}")

    def _forget(self, path: str) -> None:
        """Drop the origins of `path` and of everything under it: a new value replaces them."""
        self.origins = {k: v for k, v in self.origins.items() if k != path and not k.startswith(path + ".")}

    def _value_at(self, parts: list[str]) -> Any:
        node: Any = self.tree
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        return node


def compose(path: str | os.PathLike, overrides: list[str] = ()) -> Composed:
    """The config at `path` with its bases merged under it and the overrides over it; its values' origin is
    `path` as given, a base's is joined to the path of the file naming it."""
    composed = Composed()
    _merge_file(composed, Path(path), str(path), chain=())
    composed.apply_overrides(list(overrides))
    return composed


def _merge_file(composed: Composed, path: Path, shown: str, chain: tuple[tuple[Path, str], ...],
                named_by: str | None = None) -> None:
    """Merge the file's bases, in order (each with its own bases first), then the file itself."""
    here = path.resolve()
    above = [resolved for resolved, _ in chain]  # the files whose bases led here, top first
    if here in above:
        cycle = [name for _, name in chain[above.index(here):]] + [shown]
        raise LlmkitError(f"{named_by}: its `base:` makes a cycle: {' -> '.join(cycle)}")
    layer = _read_yaml(path, shown, named_by)
    for name in _base_names(layer.pop("base", None), shown):
        base_shown = os.path.normpath(os.path.join(os.path.dirname(shown), name))
        _merge_file(composed, path.parent / name, base_shown, (*chain, (here, shown)), named_by=shown)
    composed.merge(layer, shown)


def _base_names(value: Any, shown: str) -> list[str]:
    names = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise LlmkitError(f"{shown}: base: expected a path or a list of paths (relative to this file), got {value!r}")
    return names


def _read_yaml(path: Path, shown: str, named_by: str | None = None) -> dict:
    """One config file as a mapping; `named_by`: the file whose `base:` names it."""
    where = f" (the base of {named_by})" if named_by else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmkitError(f"{shown}: config file not found{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LlmkitError(f"{shown}: cannot read config{where}: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise LlmkitError(f"{shown}:{line}: YAML syntax error: {problem}{where}") from None
    if raw is None:
        raise LlmkitError(f"{shown}: config file is empty{where}")
    if not isinstance(raw, dict):
        raise LlmkitError(f"{shown}: a config is a mapping of keys to values, got {type(raw).__name__}{where}")
    return raw


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise LlmkitError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if value == "" and text.strip():  # a lone `|` or `>` is a YAML block marker; on the command line it means itself
        value = text
    return key.split("."), value


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {"section.key": value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
