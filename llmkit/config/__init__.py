"""The experiment config: one YAML file over the bases it names, `key.sub=value` overrides, validated
into typed sections.

    cfg = load_config("configs/tiny/finetune.yaml", ["train.learning_rate=1e-4"], stage="finetune")
    cfg.train.learning_rate, cfg.data.train_file, cfg.finetune.method

Every field's docstring is its documentation (docs/config.md is generated from it). Names follow
Hugging Face's `TrainingArguments` / example scripts wherever one exists. `sections` and `training`
hold the schema, `schema` its root, `compose` the YAML files (`base:`) and overrides, `loading` the
validation and error messages.
"""

from llmkit.config.compose import flatten
from llmkit.config.loading import load_config, save_config
from llmkit.config.schema import Config
from llmkit.config.sections import DataSection, InferSection, ModelSection, TokenizerSection
from llmkit.config.training import FinetuneSection, PretrainSection, TrainSection

__all__ = ["Config", "DataSection", "FinetuneSection", "InferSection", "ModelSection", "PretrainSection",
           "TokenizerSection", "TrainSection", "flatten", "load_config", "save_config"]
