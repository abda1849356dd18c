"""The root of the experiment config: every section, and a multi-task config cut into one config per task."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from llmkit.config.sections import DataSection, InferSection, ModelSection, Section, TokenizerSection
from llmkit.config.training import METHOD_LEARNING_RATES, FinetuneSection, PretrainSection, TrainSection


class Config(Section):
    output_dir: str
    """Run directory: resolved config, logs, checkpoints and the final Hugging Face model."""

    seed: int = 42
    """Seed of every random choice: initialisation, data order, masking, dropout."""

    model: ModelSection = ModelSection()
    tokenizer: TokenizerSection = TokenizerSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    pretrain: PretrainSection | None = None
    """Present in a pretraining config (preprocess, pretrain; evaluate and infer then use the masked LM)."""

    finetune: FinetuneSection | None = None
    """Present in a fine-tuning config (finetune, evaluate, infer). A config with neither section is taken
    as a pretraining config by preprocess/pretrain and as a fine-tuning one by the other stages."""

    infer: InferSection = InferSection()
    """How `infer` and `evaluate` use the model: its trained task, sentence embeddings, or zero-shot."""

    @model_validator(mode="before")
    @classmethod
    def _default_learning_rate(cls, raw):
        """An unset learning rate becomes the method's default, so the saved config shows the value used."""
        if not isinstance(raw, dict):
            return raw
        train = raw.get("train") or {}
        if not isinstance(train, dict) or train.get("learning_rate") is not None:
            return raw
        rate = 5e-5  # pretraining, as transformers' TrainingArguments
        if "finetune" in raw and isinstance(raw["finetune"] or {}, dict):
            rate = METHOD_LEARNING_RATES.get((raw["finetune"] or {}).get("method", "full"), rate)
        return {**raw, "train": {**train, "learning_rate": rate}}

    @model_validator(mode="after")
    def _sources(self) -> Config:
        if self.pretrain is not None and self.finetune is not None:
            raise ValueError("a config has a `pretrain:` or a `finetune:` section, not both")
        if self.model.name_or_path is None and self.model.config is None:
            raise ValueError("give model.name_or_path (a model to start from) or model.config (to build one)")
        if self.model.name_or_path is not None and self.model.config is not None:
            raise ValueError("give model.name_or_path or model.config, not both")
        return self

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> Config:
        """A data key only the other kind of config reads would be ignored without a word: refuse it."""
        if self.pretrain is None and self.finetune is None:
            return self
        tasks = (self.finetune.tasks or {}) if self.finetune is not None else {}
        sections = {"data": self.data, **{f"finetune.tasks.{name}.data": task.data for name, task in tasks.items()}}
        fields = DataSection.model_fields
        # A resolved config (saved in the run folder) holds every key at its default: those are read by nobody.
        problems = [f"{prefix}.{key}" for prefix, data in sections.items() for key in sorted(data.model_fields_set)
                    if (fields[key].json_schema_extra or {}).get("kind", self.kind) != self.kind
                    and getattr(data, key) != fields[key].default]
        if problems:
            reader = "fine-tuning" if self.kind == "pretrain" else "pretraining"
            this = "a pretraining config (it has a pretrain: section)" if self.kind == "pretrain" \
                else "a fine-tuning config (it has a finetune: section)"
            raise ValueError(f"{', '.join(problems)}: read by {reader} only, and this is {this}")
        return self

    @model_validator(mode="after")
    def _metric_for_best_model(self) -> Config:
        """A metric the run's evaluation reports, checked now rather than at the first evaluation."""
        import difflib

        from llmkit.objectives import family_of

        name = self.train.metric_for_best_model
        if name is None or (self.pretrain is None and self.finetune is None) or self.infer.task != "auto":
            return self
        known = list(dict.fromkeys(["loss", *(f"{task}_{metric}" if task else metric
                                              for task, task_cfg in self.task_configs().items()
                                              for metric in family_of(task_cfg).metric_names)]))
        if name.removeprefix("eval_") not in known:
            hint = difflib.get_close_matches(name.removeprefix("eval_"), known, n=1)
            raise ValueError(f"train.metric_for_best_model: {name!r} is not a metric of this run"
                             + (f" (did you mean {hint[0]}?)" if hint else "") + f"; its metrics: {', '.join(known)}")
        return self

    @property
    def kind(self) -> Literal["pretrain", "finetune"]:
        return "finetune" if self.finetune is not None else "pretrain"

    def task_configs(self) -> dict[str | None, Config]:
        """One single-task config per fine-tuning task: {None: self} unless finetune.tasks is set. A
        task's config has its data merged over the top-level data and output_dir/<name> as output_dir."""
        if self.finetune is None or self.finetune.tasks is None:
            return {None: self}
        configs = {}
        for name, entry in self.finetune.tasks.items():
            data = {**self.data.model_dump(), **entry.data.model_dump(exclude_unset=True)}
            configs[name] = self.model_copy(update={
                "output_dir": str(Path(self.output_dir) / name),
                "data": DataSection.model_validate(data),
                "finetune": self.finetune.model_copy(update={"task": entry.task, "tasks": None}),
            })
        return configs


