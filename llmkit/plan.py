"""What a run will be, before it runs: its model's parameters under the fine-tuning method, its steps, and an
estimate of the memory each device needs, part by part. `llmkit validate` shows it.

The model is built on PyTorch's `meta` device: shapes without storage, so a 7B model costs nothing to plan.
Memory is an estimate, not a measurement (`llmkit rehearse` measures):

    weights      every parameter in float32 (mixed precision keeps float32 master weights)
    gradients    every trainable parameter in float32
    optimizer    AdamW: two float32 moments per trainable parameter; SGD: one with momentum, else none
    activations  per trained transformer layer, s·b·h·(34 + 5·a·s/h) bytes at 16 bits (Korthikanti et al.,
                 "Reducing Activation Recomputation in Large Transformer Models", 2022), twice that in float32
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmkit.console import MIB
from llmkit.data.batching import steps_per_epoch

if TYPE_CHECKING:
    from llmkit.config import Config



@dataclass
class Plan:
    parameters: int
    trainable: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    memory_bytes: dict[str, int] = field(default_factory=dict)

    def lines(self, processes: int, cfg: Config) -> dict[str, str]:
        t = cfg.train
        memory = ", ".join(f"{part} {size / MIB:,.1f}" for part, size in self.memory_bytes.items())
        return {
            "batch": f"{t.per_device_train_batch_size} per device x {processes} processes x "
                     f"{t.gradient_accumulation_steps} accumulation = {self.global_batch}",
            "steps": f"{self.total_steps:,} ({self.steps_per_epoch:,} per epoch, "
                     f"{self.total_steps / max(self.steps_per_epoch, 1):.2f} epochs)",
            "parameters": f"{self.trainable:,} trainable of {self.parameters:,} ({cfg.finetune.method if cfg.finetune else 'all'})",
            "memory": f"~{sum(self.memory_bytes.values()) / MIB:,.1f} MiB per device (estimate): {memory} MiB",
        }


def plan_run(cfg: Config, model, examples_per_epoch: int, processes: int) -> Plan:
    """The plan of training `model` (on the meta device, the method applied) on that many examples an epoch."""
    t = cfg.train
    per_epoch = steps_per_epoch(examples_per_epoch, t.per_device_train_batch_size, processes,
                                t.gradient_accumulation_steps)
    total = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs * per_epoch))
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Plan(parameters, trainable, t.per_device_train_batch_size * processes * t.gradient_accumulation_steps,
                per_epoch, total, memory_estimate(cfg, model.config, parameters, trainable))


def memory_estimate(cfg: Config, config, parameters: int, trainable: int) -> dict[str, int]:
    t = cfg.train
    moments = 2 if t.optim != "sgd" else (1 if t.sgd_momentum > 0 else 0)
    return {"weights": 4 * parameters, "gradients": 4 * trainable, "optimizer": 4 * moments * trainable,
            "activations": activation_bytes(cfg, config) if trainable else 0}


def activation_bytes(cfg: Config, config) -> int:
    """Activations kept for the backward pass of one micro-batch of full-length sequences."""
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers") or 0
    hidden = _first(config, "hidden_size", "n_embd", "d_model") or 0
    heads = _first(config, "num_attention_heads", "n_head") or 1
    if cfg.finetune is not None and cfg.finetune.method == "freeze":
        layers = min(layers, cfg.finetune.unfreeze_top_layers)  # frozen layers keep no activations
    s, b = cfg.data.max_seq_length, cfg.train.per_device_train_batch_size
    per_layer = s * b * hidden * (34 + 5 * heads * s / max(hidden, 1))
    return int(layers * per_layer * (1 if cfg.train.mixed_precision != "no" else 2))


def _first(config, *names: str) -> int | None:
    return next((getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)), None)


def meta_model(kind, model_config):
    """A `kind` model of `model_config` with no storage (the meta device)."""
    import torch

    with torch.device("meta"):
        return kind.auto().from_config(model_config)
