"""Training speed-ups for CPUs, where two defaults under PyTorch cost a quarter of a small BERT's step.

- Dropout. Without MKL's vectorised generator (AMD and ARM CPUs), `bernoulli_` draws a mask one
  element at a time (~170M/s on the project's machine: 0.12 s of a 0.75 s step for BERT 4 x 256 at
  32 x 128). `FastDropout()` draws each mask as 32-bit random integers from numpy's SFC64, seeded
  from torch's generator, compared with a threshold: the same Bernoulli(1 - p) keep mask, ~2.5x faster,
  and still decided by torch.manual_seed and a checkpoint's saved RNG state. Attention with dropout is the other half:
  SDPA's CPU kernels refuse dropout and fall back to a math path that upcasts bf16 to fp32; under
  `FastDropout()` it runs as two matmuls in the inputs' precision around an fp32 softmax and this mask.
  Attention without dropout takes the same path when a backward will run: the CPU flash kernel's backward
  costs ~10x its forward on short sequences (a quarter of a small BART's step on Multi30k; the matmul path's
  step is ~20% shorter). Evaluation, without gradients, keeps the kernel.
- Allocator. glibc maps blocks over its mmap threshold fresh on every allocation and hands the heap's
  freed top back to the OS, so each step page-faults its largest activations in again.
  `keep_freed_memory()` serves every block from the heap and keeps freed memory for reuse (RSS stays at
  the run's peak).
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt() parameters (malloc.h)


def keep_freed_memory() -> None:
    """Serve every block from the heap and never trim it: no-op outside glibc. Raising the mmap threshold
    is not enough: glibc caps it at 32 MB, and a step's largest tensors are larger (BART's fp32 logits for
    64 x 17 targets x 8,000: 35 MB, each faulted in afresh: about a seventh of its step). Where the heap cannot grow
    (a thread's arena, or brk refused), glibc still maps memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p: float):
        n = x.numel()
        # numpy's SFC64 makes random bits 3x faster than torch's CPU generator; its seed comes from torch's
        # generator, so the masks still follow torch.manual_seed and a checkpoint's saved RNG state.
        seed = int(torch.randint(0, 2**63 - 1, ()))
        bits = torch.from_numpy(np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.int32)[:n])
        # Uniform on [-2^31, 2^31): dropped with probability round(p * 2^32) / 2^32, p to within 1.2e-10.
        keep = bits.view(x.shape) >= -2**31 + round(p * 2**32)
        ctx.save_for_backward(keep)
        ctx.scale = 1 / (1 - p)
        return torch.where(keep, x * ctx.scale, 0)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0), None


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout: zero each element with probability p, scale the rest by 1 / (1 - p)."""
    return _Dropout.apply(x, p)


def attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: float | None = None, enable_gqa: bool = False):
    """`F.scaled_dot_product_attention`'s arguments and result, with the dropout above. Matmuls run in
    the inputs' precision (bf16 under autocast), the softmax in fp32. A row with every key masked
    attends uniformly (masked scores are the dtype's minimum, as transformers' eager masks do)."""
    if enable_gqa:
        groups = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(groups, -3), value.repeat_interleave(groups, -3)
    scores = query @ key.transpose(-2, -1) * (query.shape[-1] ** -0.5 if scale is None else scale)
    lowest = torch.finfo(scores.dtype).min
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, lowest)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, lowest) if attn_mask.dtype == torch.bool else scores + attn_mask
    probs = torch.softmax(scores, -1, dtype=torch.float32).to(value.dtype)
    return (dropout(probs, dropout_p) if dropout_p > 0 else probs) @ value


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class FastDropout(TorchFunctionMode):
    """Inside it, `F.dropout` in training mode, and `F.scaled_dot_product_attention` with dropout or with a
    backward to come, run the versions above; every other call (and all of evaluation) is untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            call = dict(zip(("input", "p", "training", "inplace"), args)) | kwargs
            p = call.get("p", 0.5)
            if call.get("training", True) and 0 < p < 1 and not call.get("inplace", False):
                return dropout(call["input"], p)
        elif func is F.scaled_dot_product_attention:
            call = dict(zip(_SDPA_ARGS, args)) | kwargs
            backward = torch.is_grad_enabled() and call["query"].requires_grad
            if 0 < call.get("dropout_p", 0.0) < 1 or backward:
                return attention(**call)
        return func(*args, **kwargs)
