"""`llmkit validate CONFIG... [key=value ...] [--json]`: check configs before spending compute, in seconds.

    llmkit validate configs/finetune/sst2.yaml
    llmkit validate configs/**/*.yaml --json

For each config it reports every problem at once (the schema, the data files, their formats and columns,
bad rows and labels the training data never had, the model and tokenizer, max_seq_length against the
positions, LoRA's target modules, a resume's verdict), the facts about its data (llmkit.lint) and the plan
(llmkit.plan: parameters, steps, memory per device). It trains nothing and writes nothing; a tokenizer that a
run would train is trained in memory. Exit 0 when every config is valid, 2 otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from llmkit.config import Config, load_config
from llmkit.console import quiet
from llmkit.data.bad_rows import find_bad_rows, summary
from llmkit.data.corpus import documents
from llmkit.data.labeled import has_validation, read_split, task_row_problem
from llmkit.data.tokenizer import configured_tokenizer, train_tokenizer
from llmkit.errors import LlmkitError
from llmkit.lint import SplitData, duplicate_facts, label_facts, length_facts, split_facts
from llmkit.modeling import apply_method, check_fits, planned_config
from llmkit.objectives import family_of
from llmkit.objectives.objective import Objective
from llmkit.objectives.task import Task
from llmkit.paths import split_file, split_key
from llmkit.plan import meta_model, plan_run
from llmkit.resume import REFUSED, resume_verdict

LINT_DOCUMENTS = 20_000  # a pretraining corpus's documents read for its facts (all of them are counted)


@dataclass
class Inspection:
    """What validate found in one config: problems (each one line, naming what to fix) and facts."""

    config: str
    problems: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None  # why this YAML file is no config to run

    @property
    def valid(self) -> bool:
        return not self.problems

    def attempt(self, check, *args):
        """check(*args), its LlmkitError recorded as a problem (None returned) so that the next check still runs."""
        try:
            return check(*args)
        except LlmkitError as e:
            self.problems.append(str(e))
            return None

    def text(self) -> str:
        if self.skipped:
            return f"{self.config}: skipped ({self.skipped})"
        head = f"{self.config}: " + ("valid" if self.valid else f"{len(self.problems)} problem"
                                     + ("" if len(self.problems) == 1 else "s"))
        width = max((len(k) for k in self.facts), default=0)
        return "\n".join([head, *(f"  error: {p}" for p in self.problems),
                          *(f"  {k:<{width}}  {v}" for k, v in self.facts.items())])


def run(targets: list[str], processes: int | None, as_json: bool) -> int:
    configs, overrides = split_targets(targets)
    if not configs:
        raise LlmkitError("validate: give at least one config file (YAML)")
    with quiet():
        found = [inspect(path, overrides, processes or int(os.environ.get("WORLD_SIZE", 1))) for path in configs]
    print(json.dumps([vars(f) | {"valid": f.valid} for f in found], indent=2) if as_json
          else "\n\n".join(f.text() for f in found))
    return 0 if all(f.valid for f in found) else 2


def split_targets(targets: list[str]) -> tuple[list[str], list[str]]:
    """Config paths (a shell glob expands to many) and `key=value` overrides, which apply to each."""
    overrides = [t for t in targets if "=" in t and not os.path.exists(t)]
    return [t for t in targets if t not in overrides], overrides


def inspect(path: str, overrides: list[str], processes: int) -> Inspection:
    found = Inspection(path, skipped=_not_a_run_config(Path(path)))
    if found.skipped:
        return found
    cfg = found.attempt(load_config, Path(path), overrides)
    if cfg is None:
        return found
    for name, task_cfg in cfg.task_configs().items():
        _inspect_one(found, task_cfg, name, processes)
    _resume_verdict(found, cfg, processes)
    return found


def _not_a_run_config(path: Path) -> str | None:
    """Files a glob over configs/ meets that are not experiments: bases (`_*.yaml`) and Accelerate's own files."""
    import yaml

    if path.name.startswith("_"):
        return "a base that configs name in `base:`, not a config to run"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None  # load_config names the problem
    if isinstance(raw, dict) and {"distributed_type", "compute_environment"} & set(raw):
        return "an Accelerate config file: give it to accelerate launch --config_file"
    return None


def _inspect_one(found: Inspection, cfg: Config, task: str | None, processes: int) -> None:
    family = family_of(cfg)
    prefix = f"{task}: " if task else ""
    if issubclass(family, Task):
        splits, id2label = _task_splits(found, cfg, family, task)
    elif issubclass(family, Objective):
        splits, id2label = _corpus_splits(found, cfg), None
    else:  # an untrained use: its evaluation reads the files itself
        splits, id2label = {}, None
    tokenizer = found.attempt(_tokenizer, cfg, splits)
    trained = issubclass(family, (Task, Objective))
    if tokenizer is not None:
        for split in splits.values():
            split.lengths = found.attempt(_lengths, cfg, family, tokenizer, id2label, split) or []
    _add_data_facts(found, cfg, splits, prefix)
    if tokenizer is None or not trained or "train" not in splits:
        return
    instance = family(cfg, tokenizer, id2label) if id2label is not None else None
    model = found.attempt(_planned_model, found, cfg, family, tokenizer, instance)
    if model is not None:
        examples = _examples_per_epoch(cfg, splits["train"], instance)
        for key, line in plan_run(cfg, model, examples, processes).lines(processes, cfg).items():
            found.facts[prefix + key] = line


def _task_splits(found: Inspection, cfg: Config, family, task: str | None):
    """{split: SplitData} of the readable splits, bad rows reported as problems; the training labels."""
    splits, label2id, id2label = {}, None, None
    names = ["train", *(["validation"] if has_validation(cfg.data) else []), *(["test"] if cfg.data.test_file else [])]
    for split in names:
        read = found.attempt(read_split, cfg.data, split, family, task, cfg.seed)
        if read is None:
            continue
        rows, path, key = read
        problem, columns = task_row_problem(cfg.data, rows, family, label2id)
        bad = find_bad_rows(rows, problem, columns)
        if bad and not cfg.data.skip_bad_rows:
            found.problems.append(f"{key}: {len(bad)} bad rows in {path}: {summary(list(bad.values()))}")
        rows = rows.select([i for i in range(len(rows)) if i not in bad]) if bad else rows
        if split == "train":
            id2label = family.label_vocabulary(cfg.data, rows)
            label2id = {name: i for i, name in id2label.items()}
        texts = [" ".join(map(str, value)) if isinstance(value, list) else str(value)
                 for value in _joined(rows, family.text_columns(cfg.data))]
        labels = None if not family.has_classes else [
            family.labels_of(cfg.data, value) for value in rows[family.label_column(cfg.data)]]
        splits[split] = SplitData(key, path, texts, labels, [], rows)
    return splits, id2label


def _joined(rows, columns: list[str]) -> list:
    """Each row's text columns as one value (a pair joined by a tab)."""
    values = [rows[c] for c in columns]
    return values[0] if len(values) == 1 else ["\t".join(map(str, row)) for row in zip(*values)]


def _corpus_splits(found: Inspection, cfg: Config) -> dict[str, SplitData]:
    splits = {}
    for split in ("train", "validation"):
        path = split_file(cfg.data, split)
        if path is None:
            continue
        key = split_key(split)
        texts = found.attempt(lambda: list(documents(cfg.data, path, key)))
        if texts is not None:
            splits[split] = SplitData(key, path, texts, None, [], unit="documents")
    return splits


def _tokenizer(cfg: Config, splits: dict[str, SplitData]):
    """The run's tokenizer: the configured or the model's, else trained (in memory) on the training texts."""
    configured = configured_tokenizer(cfg)
    if configured is not None or "train" not in splits:
        return configured
    return train_tokenizer(cfg.tokenizer, lambda: iter(splits["train"].texts))


def _lengths(cfg: Config, family, tokenizer, id2label, split: SplitData) -> list[int]:
    """Token counts of the split's examples, untruncated: as the task encodes them, or of a corpus's documents
    (the first LINT_DOCUMENTS)."""
    if split.rows is None:
        return [len(ids) for ids in tokenizer(split.texts[:LINT_DOCUMENTS])["input_ids"]]
    untruncated = cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_seq_length": 1 << 30})})
    encoded = family(untruncated, tokenizer, id2label).encode(split.rows)
    return [len(ids) for ids in encoded["input_ids"]]


def _add_data_facts(found: Inspection, cfg: Config, splits: dict[str, SplitData], prefix: str) -> None:
    if not splits:
        return
    facts = found.facts
    facts[prefix + "rows"] = split_facts(splits)
    for name, split in splits.items():
        if (labels := label_facts(split)) is not None:
            facts[f"{prefix}labels {name}"] = labels
    for n, line in enumerate(duplicate_facts(splits)):
        facts[f"{prefix}duplicates" + (f" {n + 1}" if n else "")] = line
    if "train" in splits and (lengths := length_facts(splits["train"], cfg.data.max_seq_length,
                                                      cfg.train.num_train_epochs)):
        facts[prefix + "tokens train"] = lengths


def _planned_model(found: Inspection, cfg: Config, family, tokenizer, instance):
    """The model a run trains, with no storage: its shape, the method applied (LoRA's targets checked)."""
    labels = instance.model_labels() if instance is not None else {}
    config = planned_config(cfg, tokenizer, **labels)
    found.attempt(check_fits, cfg, config, tokenizer)
    model = meta_model(family.model_kind, config)
    if cfg.finetune is not None:
        model = apply_method(cfg, model, family.peft_task_type)
    return model


def _examples_per_epoch(cfg: Config, train: SplitData, task: Task | None) -> int:
    """What a task trains on (its rows, or a question's windows); for a pretraining corpus, the blocks its
    tokens pack into."""
    if task is not None:
        return task.training_examples(train.rows)
    if not train.lengths:
        return len(train.texts)
    tokens = sum(train.lengths) * len(train.texts) / len(train.lengths)  # the documents read, scaled to all
    return max(1, int(tokens // cfg.data.max_seq_length))


def _resume_verdict(found: Inspection, cfg: Config, processes: int) -> None:
    """What resuming output_dir's checkpoint would do; refused is a problem when the config resumes."""
    verdict = found.attempt(resume_verdict, cfg, processes)
    if verdict is None:
        return
    if verdict.kind == REFUSED and cfg.train.resume_from_checkpoint is not None:
        found.problems.append(verdict.line)
    else:
        found.facts["resume"] = verdict.line
