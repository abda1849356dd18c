"""Build the model a stage trains or runs: from a pretrained folder, or from scratch from `model.config`."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from pathlib import Path

from llmkit.config import Config, resolve_path
from llmkit.errors import LlmkitError

HEADS = {
    "masked_lm": "AutoModelForMaskedLM",
    "pretraining": "AutoModelForPreTraining",  # masked LM + sentence-pair head (BertForPreTraining)
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "causal_lm": "AutoModelForCausalLM",
    "encoder": "AutoModel",
}
ARCHITECTURE_SUFFIXES = {"masked_lm": ("ForMaskedLM", "ForPreTraining"),  # a *ForPreTraining model holds the MLM head
                         "pretraining": "ForPreTraining",
                         "sequence_classification": "ForSequenceClassification",
                         "token_classification": "ForTokenClassification",
                         "causal_lm": ("ForCausalLM", "LMHeadModel"),  # GPT2LMHeadModel
                         "encoder": ""}  # every model has one
PEFT_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "token_classification": "TOKEN_CLS"}
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
    if not os.path.isdir(path) and (os.path.isabs(path) or path.startswith(".") or os.environ.get("HF_HUB_OFFLINE") == "1"):
        raise LlmkitError(f"{key}: model folder not found: {path}")
    return path


def build_model(cfg: Config, tokenizer, head: str, resume: str | os.PathLike | None = None, **config_overrides):
    """`head` model from the checkpoint being resumed, else model.name_or_path, else built from model.config."""
    import transformers

    auto = getattr(transformers, HEADS[head])
    source = str(resume) if resume is not None else cfg.model.name_or_path
    key = "train.resume_from_checkpoint" if resume is not None else "model.name_or_path"
    if cfg.model.trust_remote_code:
        print("WARNING: model.trust_remote_code is on: code shipped with the model will run on this machine")
    if source is not None:
        path = require_model(source, key)
        try:
            model = auto.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code, **config_overrides)
        except (OSError, ValueError, KeyError) as e:
            raise LlmkitError(f"{key}: cannot load a {head} model from {source}: {e}") from None
    else:
        model = auto.from_config(_new_config(cfg, tokenizer, config_overrides))
    _check_fits(cfg, model.config, tokenizer)
    return model


def apply_method(cfg: Config, model, head: str, resume: str | os.PathLike | None = None):
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
    task_type = PEFT_TASK_TYPES[head]
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


def _check_fits(cfg: Config, config, tokenizer) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and getattr(config, "pad_token_id", None) is not None and config.model_type in (
            "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert"):
        positions -= config.pad_token_id + 1  # RoBERTa-style position ids start after the padding index
    if positions is not None and cfg.data.max_seq_length > positions:
        raise LlmkitError(f"data.max_seq_length: {cfg.data.max_seq_length} is more than the model's "
                          f"{positions} positions (max_position_embeddings)")
    if getattr(config, "vocab_size", len(tokenizer)) < len(tokenizer):
        raise LlmkitError(f"tokenizer: {len(tokenizer)} tokens do not fit the model's vocab_size {config.vocab_size}")


def load_trained(source: str, head: str, key: str = "model.name_or_path", trust_remote_code: bool = False):
    """A trained model *with* the `head` it is asked for; never a fresh, untrained head on top."""
    import transformers
    from transformers import AutoConfig

    path = require_model(source, key)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise LlmkitError(f"{key}: cannot load a model config from {source}: {e}") from None
    suffix = ARCHITECTURE_SUFFIXES[head]
    architectures = config.architectures or []
    if not any(a.endswith(suffix) for a in architectures):
        raise LlmkitError(f"{key}: the model in {path} ({', '.join(architectures) or 'no head'}) has no "
                          f"{head.replace('_', '-')} head; train one first (llmkit "
                          f"{'finetune' if head.endswith('classification') else 'pretrain'})")
    auto = getattr(transformers, HEADS[head])
    if not (Path(path) / ADAPTER_CONFIG).exists():
        return auto.from_pretrained(path, trust_remote_code=trust_remote_code)
    from peft import PeftConfig, PeftModel

    adapter = PeftConfig.from_pretrained(path)
    model = auto.from_pretrained(adapter.base_model_name_or_path, config=config, trust_remote_code=trust_remote_code)
    if adapter.peft_type == "PREFIX_TUNING":
        accept_past_key_values(model)
    return PeftModel.from_pretrained(model, path)

