"""Build the model a stage trains or runs: from a pretrained folder, or from scratch from `model.config`."""

from __future__ import annotations

import difflib
import functools
import json
import inspect
import os
from pathlib import Path

from typing import TYPE_CHECKING

from llmkit.console import warn
from llmkit.errors import LlmkitError
from llmkit.paths import resolve_path

if TYPE_CHECKING:
    from llmkit.config import Config
    from llmkit.objectives.base import ModelKind

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def has_model(folder: str | os.PathLike) -> bool:
    """A full model, or a PEFT adapter with the config of the model it adapts."""
    folder = Path(folder)
    return (folder / "config.json").exists() and (
        any((folder / f).exists() for f in WEIGHT_FILES) or (folder / ADAPTER_CONFIG).exists())


def require_model(source: str, key: str = "model.name_or_path") -> str:
    """The resolved path of a model source, failing early on a local folder without weights."""
    path = resolve_path(source)
    if os.path.isdir(path) and not has_model(path):
        raise LlmkitError(f"{key}: {path} holds no model (needs config.json and model.safetensors)")
    if os.path.isdir(path):
        check_weights(Path(path), key)
    if not os.path.isdir(path) and (os.path.isabs(path) or path.startswith(".") or os.environ.get("HF_HUB_OFFLINE") == "1"):
        raise LlmkitError(f"{key}: model folder not found: {path}")
    return path


def check_weights(folder: Path, key: str) -> None:
    """Every safetensors file of a model folder is whole, and every shard its index names is there: a copy
    cut short fails here with one line instead of deep inside from_pretrained."""
    from safetensors import SafetensorError, safe_open

    files = [folder / name for name in ("model.safetensors", "adapter_model.safetensors") if (folder / name).exists()]
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise LlmkitError(f"{key}: {index} is not a valid weights index ({e}); re-copy or re-download it") from None
        missing = [shard for shard in shards if not (folder / shard).exists()]
        if missing:
            raise LlmkitError(f"{key}: {index} names {missing[0]}, which is not in {folder}; re-copy or re-download it")
        files += [folder / shard for shard in shards]
    for path in files:
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise LlmkitError(f"{key}: {path} is truncated or corrupt ({e}); re-copy or re-download it") from None


def build_model(cfg: Config, tokenizer, kind: ModelKind, resume: str | os.PathLike | None = None,
                **config_overrides):
    """A `kind` model from the checkpoint being resumed, else model.name_or_path, else built from model.config."""
    auto = kind.auto()
    source = str(resume) if resume is not None else cfg.model.name_or_path
    key = "train.resume_from_checkpoint" if resume is not None else "model.name_or_path"
    if cfg.model.trust_remote_code:
        warn("model.trust_remote_code is on: code shipped with the model will run on this machine")
    if source is not None:
        path = require_model(source, key)
        try:
            if cfg.model.encoder_decoder and resume is None:
                model = warm_started_encoder_decoder(path, kind, config_overrides)
            else:
                model = auto.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code, **config_overrides)
        except (OSError, ValueError, KeyError) as e:
            raise LlmkitError(f"{key}: cannot load a {kind.head} model from {source}: {e}") from None
    else:
        model = auto.from_config(_new_config(cfg, tokenizer, config_overrides))
    check_fits(cfg, model.config, tokenizer)
    return model


def warm_started_encoder_decoder(path: str, kind: ModelKind, overrides: dict):
    """model.encoder_decoder: encoder and decoder both from the encoder at `path` (BERT2BERT);
    from_encoder_decoder_pretrained makes the decoder's copy causal with cross-attention. `overrides` (the
    family's) give the decoder's start, end and padding tokens."""
    from transformers import EncoderDecoderModel

    if not kind.fits(["EncoderDecoderModel"]):
        raise LlmkitError(f"model.encoder_decoder: builds a sequence-to-sequence model, not a {kind.head} one")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    for config in (model.config, model.generation_config):  # keywords here would go to the decoder ("decoder_")
        for name, value in overrides.items():
            setattr(config, name, value)
    return model


def planned_config(cfg: Config, tokenizer, **config_overrides):
    """The model config a run starts from (model.name_or_path's, or one built from model.config), with no weights
    loaded: what `llmkit validate` plans with (check_fits then checks it against the data and tokenizer)."""
    from transformers import AutoConfig

    if cfg.model.name_or_path is None:
        config = _new_config(cfg, tokenizer, config_overrides)
    else:
        path = require_model(cfg.model.name_or_path)
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code, **config_overrides)
        except (OSError, ValueError, KeyError) as e:
            raise LlmkitError(f"model.name_or_path: cannot read the model config of {path}: {e}") from None
    return encoder_decoder_config(config, config_overrides) if cfg.model.encoder_decoder else config


def encoder_decoder_config(encoder, overrides: dict):
    """The config warm_started_encoder_decoder's model has: the encoder's twice, the decoder's copy causal with
    cross-attention."""
    import copy

    from transformers import EncoderDecoderConfig

    decoder = copy.deepcopy(encoder)
    decoder.is_decoder, decoder.add_cross_attention = True, True
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def apply_method(cfg: Config, model, peft_task_type: str, resume: str | os.PathLike | None = None):
    """Make only what finetune.method trains trainable: everything (full), the head and the top
    layers (freeze), LoRA adapters or virtual prompt tokens (PEFT, head included)."""
    section = cfg.finetune
    if section.method == "freeze":
        for name, param in model.base_model.named_parameters():
            # The pooler feeds the classifier, and is often untrained (sentence-embedding checkpoints): head-side.
            param.requires_grad = "pooler" in name
        if section.unfreeze_top_layers:
            layers = _layer_stack(model.base_model)
            for layer in layers[len(layers) - section.unfreeze_top_layers:]:
                for param in layer.parameters():
                    param.requires_grad = True
        return model
    if section.method not in ("lora", "prompt"):
        return model
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model, set_peft_model_state_dict

    if cfg.model.name_or_path is None:
        raise LlmkitError(f"finetune.method: {section.method} adapts a pretrained model; set model.name_or_path")
    task_type = peft_task_type
    if section.method == "lora":
        lora = section.lora
        # PEFT trains the classifier; the pooler in front of it (random after MLM pretraining) trains with it.
        pooler = ["pooler"] if any(name.split(".")[-1] == "pooler" for name, _ in model.named_modules()) else None
        peft_config = LoraConfig(task_type=task_type, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.target_modules, modules_to_save=pooler)
    elif section.prompt.type == "prefix_tuning":
        accept_past_key_values(model)
        peft_config = PrefixTuningConfig(task_type=task_type, num_virtual_tokens=section.prompt.num_virtual_tokens)
    else:
        peft_config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=section.prompt.num_virtual_tokens)
    try:
        model = get_peft_model(model, peft_config)
    except ValueError as e:
        raise LlmkitError(f"finetune.lora.target_modules: {e}") from None
    if resume is not None:
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(Path(resume) / "adapter_model.safetensors"))
    return model


def accept_past_key_values(model) -> None:
    """Let PEFT's prefix tuning find the key/value cache argument. PEFT looks for `past_key_values` in
    the signature of the model's (or its backbone's) forward; transformers 5.24 renamed it `cache` (the
    old name still works only through a deprecation shim). Each of the two that takes `cache` gets a
    subclass, of the same name so that configs save as before, whose forward declares the old name and
    passes it on. A model that takes neither (DeBERTa-v2) cannot hold prefixes: refused here."""
    modules = {model, model.base_model}
    if not any({"past_key_values", "cache"} & set(inspect.signature(m.forward).parameters) for m in modules):
        raise LlmkitError(f"finetune.prompt.type: prefix_tuning puts trained keys and values into each layer's "
                          f"cache, and {type(model).__name__} takes no cache argument; use prompt_tuning")
    for module in modules:
        parameters = inspect.signature(module.forward).parameters
        if "past_key_values" not in parameters and "cache" in parameters:
            module.__class__ = _with_past_key_values(type(module))


@functools.cache
def _with_past_key_values(cls: type) -> type:
    def forward(self, *args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return cls.forward(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def _layer_stack(module):
    """The encoder's repeated blocks: the longest ModuleList inside the base model."""
    import torch

    stacks = [m for m in module.modules() if isinstance(m, torch.nn.ModuleList)]
    if not stacks:
        raise LlmkitError("finetune.unfreeze_top_layers: this architecture has no layer list to unfreeze")
    return max(stacks, key=len)


def _new_config(cfg: Config, tokenizer, overrides: dict):
    from transformers import AutoConfig

    attrs = dict(cfg.model.config)
    model_type = attrs.pop("model_type")
    try:
        default = AutoConfig.for_model(model_type)
    except ValueError:
        raise LlmkitError(f"model.config.model_type: unknown model type {model_type!r}") from None
    known = set(default.to_dict())
    for name in attrs:
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            raise LlmkitError(f"model.config.{name}: not an attribute of {model_type} configs"
                              + (f" (did you mean {hint[0]}?)" if hint else ""))
    specials = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id")
                for name in ("pad", "bos", "eos", "sep", "cls", "mask")
                if getattr(tokenizer, f"{name}_token_id", None) is not None and f"{name}_token_id" in known}
    return AutoConfig.for_model(model_type, **{**attrs, "vocab_size": len(tokenizer), **specials, **overrides})


def check_fits(cfg: Config, config, tokenizer) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and getattr(config, "pad_token_id", None) is not None and config.model_type in (
            "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert"):
        positions -= config.pad_token_id + 1  # RoBERTa-style position ids start after the padding index
    if positions is not None and cfg.data.max_seq_length > positions:
        raise LlmkitError(f"data.max_seq_length: {cfg.data.max_seq_length} is more than the model's "
                          f"{positions} positions (max_position_embeddings)")
    if getattr(config, "vocab_size", len(tokenizer)) < len(tokenizer):
        raise LlmkitError(f"tokenizer: {len(tokenizer)} tokens do not fit the model's vocab_size {config.vocab_size}")


def load_trained(source: str, kind: ModelKind, key: str = "model.name_or_path", trust_remote_code: bool = False):
    """A trained model *with* the head of `kind`; never a fresh, untrained head on top."""
    from transformers import AutoConfig

    path = require_model(source, key)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise LlmkitError(f"{key}: cannot load a model config from {source}: {e}") from None
    architectures = config.architectures or []
    if not kind.fits(architectures):
        raise LlmkitError(f"{key}: the model in {path} ({', '.join(architectures) or 'no head'}) has no "
                          f"{kind.head} head; train one first (llmkit {kind.trained_by})")
    auto = kind.auto()
    if not (Path(path) / ADAPTER_CONFIG).exists():
        return auto.from_pretrained(path, trust_remote_code=trust_remote_code)
    from peft import PeftConfig, PeftModel

    adapter = PeftConfig.from_pretrained(path)
    model = auto.from_pretrained(adapter.base_model_name_or_path, config=config, trust_remote_code=trust_remote_code)
    if adapter.peft_type == "PREFIX_TUNING":
        accept_past_key_values(model)
    return PeftModel.from_pretrained(model, path)

