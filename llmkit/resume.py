"""The resume verdict: what continuing a checkpoint with this run's config does, decided before anything is written.

Every checkpoint holds fingerprint.json, a fingerprint of the run that wrote it: the resolved config, the data
files (size and a hash of their first and last MiB), the tokenizer's files, the process count and global batch,
and the library versions. Resuming compares it with this run's and prints one line:

    exact                   nothing that matters changed: the run continues bitwise
    continues, not bitwise  the process count, a library version or a training setting changed; this config's
                            optimizer and schedule settings apply, the schedule re-planned from the checkpoint's step
    refused                 the model, the tokenizer, the data or the objective changed: exit 2, output_dir untouched;
                            train.resume_force=true continues anyway (`forced`)

    verdict = resume_verdict(cfg)  # without training (what `llmkit validate` shows); None without a checkpoint
    verdict.kind, verdict.lines, verdict.line
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from llmkit.checkpoint import FINGERPRINT_FILE, STATE_FILE, find_checkpoint
from llmkit.config import Config, flatten
from llmkit.console import MIB
from llmkit.paths import resolve_path, split_file, split_key
from llmkit.runlog import package_versions

EXACT, CONTINUES, REFUSED, FORCED, IGNORED = "exact", "continues", "refused", "forced", "ignored"

# How a changed config key counts, by its flattened name (`model.config.hidden_size`; a task's
# `finetune.tasks.<name>.data.*` counts as `data.*`). fnmatch patterns; the classes are tried in this order and
# the first matching pattern decides. tests/test_resume_verdict.py checks that every key of the schema is named.
KEY_CLASSES = {
    REFUSED: (  # the checkpoint would go on as another model, tokenizer or objective, or on other examples
        "model.config*", "model.name_or_path", "tokenizer.*",
        "pretrain", "pretrain.objective", "pretrain.pooling",
        "finetune", "finetune.task", "finetune.method", "finetune.lora.*", "finetune.prompt.*",
        "finetune.unfreeze_top_layers", "finetune.tasks", "finetune.tasks.*.task",
        # what the examples are made of (the files themselves are compared by content, not by path)
        "data.format", "data.encoding", "data.line_pattern", "data.header", "data.column_names", "data.*_column",
        "data.label_separator", "data.label_names*", "data.token_field", "data.tag_field", "data.tag_scheme",
        "data.multi_tag_separator", "data.max_seq_length", "data.max_train_samples", "data.document_boundary",
        "data.validation_split_percentage", "data.dedupe", "data.choice_columns", "data.doc_stride",
        "data.source_suffix", "data.target_suffix", "model.encoder_decoder", "pretrain.noise_density",
        "pretrain.mean_noise_span_length", "finetune.seq2seq.max_target_length", "finetune.seq2seq.source_prefix",
    ),
    IGNORED: (  # where the run writes, how often it logs, evaluates and saves, what infer does, how to resume
        "output_dir", "infer.*", "model.trust_remote_code", "pretrain.pseudo_perplexity", "finetune.threshold",
        "finetune.merge_adapter", "train.per_device_eval_batch_size", "train.logging_steps", "train.eval_*",
        "train.save_*", "train.report_to", "train.resume_*", "train.overwrite_output_dir", "train.on_nonfinite_loss",
        "data.data_dir", "data.*_file", "data.max_eval_samples", "data.cache_dir", "data.preprocessing_num_workers",
        "data.skip_bad_rows",  # a bad row stops a run without it, so it cannot change data that already trained
        "data.positive_label",
        # how evaluation reads and generates answers, not what trains
        "finetune.question_answering.*", "finetune.seq2seq.num_beams", "finetune.seq2seq.max_new_tokens",
        "finetune.seq2seq.length_penalty", "finetune.seq2seq.generate_during_training",
    ),
    CONTINUES: (  # how training goes on from here: applied, so the run is no longer the original's continuation
        "seed", "train.learning_rate", "train.lr_scheduler_type", "train.warmup_*", "train.max_steps",
        "finetune.seq2seq.label_smoothing_factor",
        "train.num_train_epochs", "train.max_time", "train.per_device_train_batch_size",
        "train.gradient_accumulation_steps", "train.optim", "train.weight_decay", "train.adam_*", "train.sgd_momentum",
        "train.max_grad_norm", "train.group_by_length", "train.mixed_precision", "train.fast_dropout", "train.use_cpu",
        "train.metric_for_best_model", "train.greater_is_better", "train.load_best_model_at_end",
        "train.early_stopping_*", "pretrain.mlm_probability", "pretrain.whole_word_mask", "pretrain.*_replace_prob",
        "pretrain.temperature", "pretrain.sparse_prediction", "finetune.label_all_tokens",
        "finetune.tasks.*.proportion",
    ),
}
# Said after a change whose effect is not obvious from the key.
NOTES = {"train.optim": " (another optimizer: its state starts afresh)"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model")


def key_class(key: str) -> str | None:
    """REFUSED, IGNORED or CONTINUES for a flattened config key; None when KEY_CLASSES does not name it."""
    name = key
    if key.startswith("finetune.tasks.") and ".data." in key:
        name = "data." + key.split(".data.", 1)[1]
    return next((kind for kind, patterns in KEY_CLASSES.items() if any(fnmatchcase(name, p) for p in patterns)), None)


@dataclass
class Verdict:
    """What resuming `checkpoint` with this config does: `exact`, `continues` (not bitwise), `refused`, `forced`."""

    checkpoint: Path
    kind: str
    lines: list[str]  # one per difference, `key old -> new`: those that refuse first
    line: str  # the one line a run prints (for `refused`, the error)
    changed: frozenset[str] = frozenset()  # the config keys that differ and matter

    @property
    def replans(self) -> bool:
        """Whether this config's optimizer and schedule settings replace the checkpoint's, from its step."""
        return self.kind != EXACT

    @property
    def keeps_optimizer_state(self) -> bool:
        return "train.optim" not in self.changed


def fingerprint(cfg: Config, num_processes: int) -> dict:
    """What decides whether a checkpoint continues exactly (fingerprint.json in every checkpoint). The same on every
    process: it is read from the config and the files, at most 2 MiB of each."""
    t = cfg.train
    return {"config": cfg.model_dump(mode="json"), "data": _data_files(cfg), "tokenizer": _tokenizer_files(cfg),
            "processes": num_processes,
            "global_batch": t.per_device_train_batch_size * num_processes * t.gradient_accumulation_steps,
            "versions": package_versions()}


def resume_verdict(cfg: Config, num_processes: int | None = None) -> Verdict | None:
    """The verdict on resuming output_dir's checkpoint (train.resume_from_checkpoint's, the newest when that is
    unset) with cfg, without training; None when there is no checkpoint. The process count defaults to what
    torchrun / accelerate launch set (WORLD_SIZE), else 1."""
    checkpoint = find_checkpoint(Path(cfg.output_dir), cfg.train.resume_from_checkpoint or "latest")
    if checkpoint is None:
        return None
    processes = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    return judge(checkpoint, fingerprint(cfg, processes), cfg.train.resume_force)


def judge(checkpoint: Path, now: dict, force: bool) -> Verdict:
    """The verdict on continuing `checkpoint` with the fingerprint `now` (reads the checkpoint only)."""
    step = json.loads((checkpoint / STATE_FILE).read_text())["global_step"]
    if not (checkpoint / FINGERPRINT_FILE).exists():
        return Verdict(checkpoint, CONTINUES, [], f"resume from {checkpoint} at step {step}: continues (the "
                                                  "checkpoint has no fingerprint: written by an older llmkit)")
    before = json.loads((checkpoint / FINGERPRINT_FILE).read_text())
    lines, changed = _config_lines(before.get("config", {}), now["config"])
    refusing = lines[REFUSED] + _content_lines(before, now)
    continuing = lines[CONTINUES] + _run_lines(before, now)
    kind = (FORCED if force else REFUSED) if refusing else CONTINUES if continuing else EXACT
    return Verdict(checkpoint, kind, refusing + continuing, _line(kind, checkpoint, step, refusing, continuing),
                   frozenset(changed))


def _line(kind: str, checkpoint: Path, step: int, refusing: list[str], continuing: list[str]) -> str:
    if kind == REFUSED:
        return (f"train.resume_from_checkpoint: refused to resume {checkpoint} (step {step}): {'; '.join(refusing)}. "
                "Force it with train.resume_force=true, or start fresh with train.overwrite_output_dir=true or "
                "another output_dir")
    head = f"resume from {checkpoint} at step {step}"
    rest = (f"continues, not bitwise: {'; '.join(continuing)} (the optimizer and schedule follow this config from "
            f"step {step})") if continuing else ""
    if kind == FORCED:
        forced = f"{head}: forced by train.resume_force=true despite {'; '.join(refusing)}"
        return f"{forced}; {rest}" if rest else forced
    return f"{head}: {rest or 'exact (nothing that matters changed)'}"


def _config_lines(before: dict, now: dict) -> tuple[dict[str, list[str]], set[str]]:
    """`key old -> new` for each changed config key, by class; and the changed keys that matter."""
    old, new = flatten(before), flatten(now)
    lines = {REFUSED: [], CONTINUES: [], IGNORED: []}
    changed, unread = set(), _unread(old) & _unread(new)
    for key in sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in unread):
        kind = key_class(key) or CONTINUES  # a key the table does not name yet: applied, and said
        lines[kind].append(f"{key} {_show(old.get(key))} -> {_show(new.get(key))}{NOTES.get(key, '')}")
        if kind != IGNORED:
            changed.add(key)
    return lines, changed


def _unread(flat: dict) -> set[str]:
    """Keys a run with this (flattened) config does not read, whatever their value."""
    unread = set()
    if flat.get("train.max_steps", -1) > 0:
        unread.add("train.num_train_epochs")
    if flat.get("train.warmup_steps"):
        unread.add("train.warmup_ratio")
    if flat.get("tokenizer.name_or_path") or flat.get("model.name_or_path"):  # a tokenizer loaded, not trained
        unread |= {key for key in flat if key.startswith("tokenizer.") and key != "tokenizer.name_or_path"}
    return unread


def _content_lines(before: dict, now: dict) -> list[str]:
    """The data files and the tokenizer's, compared by content."""
    old_files, new_files = before.get("data", {}), now["data"]
    lines = [f"{key} content {_show_file(old_files.get(key))} -> {_show_file(new_files.get(key))}"
             for key in sorted(old_files.keys() | new_files.keys()) if old_files.get(key) != new_files.get(key)]
    if before.get("tokenizer") != now["tokenizer"]:
        lines.append(f"the tokenizer's files {_short(before.get('tokenizer'))} -> {_short(now['tokenizer'])}")
    return lines


def _run_lines(before: dict, now: dict) -> list[str]:
    """The process count, the global batch and the library versions."""
    lines = [f"{name.replace('_', ' ')} {before.get(name)} -> {now[name]}" for name in ("processes", "global_batch")
             if before.get(name) != now[name]]
    old_versions = before.get("versions", {})
    return lines + [f"{name} {old_versions.get(name)} -> {version}" for name, version in now["versions"].items()
                    if old_versions.get(name) != version]


def _data_files(cfg: Config) -> dict:
    """Each training and validation file by its key (by content: moving a file changes nothing)."""
    return {split_key(split, name): _file_hash(split_file(task_cfg.data, split))
            for name, task_cfg in cfg.task_configs().items() for split in ("train", "validation")}


def _tokenizer_files(cfg: Config) -> str | None:
    """A hash of the tokenizer's files when it is loaded from a folder. A trained one is a function of the
    tokenizer.* keys and the training data, compared on their own; a hub id is its name."""
    source = cfg.tokenizer.name_or_path or cfg.model.name_or_path
    folder = resolve_path(source) if source else None
    if folder is None or not os.path.isdir(folder):
        return None
    entries = [[name, _file_hash(os.path.join(folder, name))] for name in TOKENIZER_FILES]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _file_hash(path: str | None) -> dict | None:
    """Size and sha256 of the first and last MiB: tells an edited, cut or appended file at once, also a many-GB one
    (an edit in the middle that keeps the size is not seen)."""
    if path is None or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(MIB))
        if size > MIB:
            f.seek(max(size - MIB, MIB))
            digest.update(f.read())
    return {"size": size, "sha256": digest.hexdigest()}


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _show_file(entry: dict | None) -> str:
    return "(no file)" if entry is None else f"{entry['size']:,} bytes {entry['sha256'][:8]}"


def _short(digest: str | None) -> str:
    return "(none)" if digest is None else digest[:8]
