"""T5's span corruption of a packed block: which tokens are noise, and the encoder input / decoder target
they make.

    block    the cat sat on the mat and purred
    noise        ^^^            ^^^^^^^
    input    the <extra_id_0> sat on <extra_id_1> purred </s>
    target   <extra_id_0> cat <extra_id_1> the mat and </s>

A block of `raw_length(max_seq_length, ...)` tokens corrupts to an input of exactly max_seq_length tokens
(T5's "inputs length"), so the encoder sees full-length rows.
"""

from __future__ import annotations

from llmkit.errors import LlmkitError

SENTINEL = "<extra_id_{}>"  # T5's sentinel names: the i-th noise span of an example is replaced by the i-th


def sentinel_names(count: int) -> list[str]:
    return [SENTINEL.format(i) for i in range(count)]


def noise_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of `length` tokens. At least one token stays un-noised; a block
    too short for noise (one token) has none."""
    noise = min(max(round(length * density), 1), length - 1)
    if noise <= 0:
        return 0, 0
    return noise, max(1, min(round(noise / mean_span), noise, length - noise))


def corrupted_lengths(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(input, target) lengths of a corrupted block: kept tokens + a sentinel per span + eos, and the noise
    tokens + a sentinel per span + eos."""
    noise, spans = noise_counts(length, density, mean_span)
    return length - noise + spans + 1, noise + spans + 1


def raw_length(max_seq_length: int, density: float, mean_span: float) -> int:
    """The longest block whose corrupted input fits max_seq_length: each span of `mean_span` tokens shrinks to
    one sentinel, so the block is longer than the input."""
    length = max(1, max_seq_length - 1)
    while corrupted_lengths(length + 1, density, mean_span)[0] <= max_seq_length:
        length += 1
    return length


def noise_mask(length: int, density: float, mean_span: float, generator):
    """A bool tensor over the block, True at noise tokens: the noise and the kept tokens are each cut into
    `spans` runs of random lengths (at least one token each), which alternate, kept first."""
    import torch

    noise, spans = noise_counts(length, density, mean_span)
    if spans == 0:
        return torch.zeros(length, dtype=torch.bool)

    def run_lengths(total: int):
        cuts = (torch.randperm(total - 1, generator=generator)[:spans - 1] + 1).sort().values
        return torch.diff(cuts, prepend=torch.tensor([0]), append=torch.tensor([total]))

    runs = torch.stack([run_lengths(length - noise), run_lengths(noise)], dim=1).flatten()  # kept, noise, kept...
    return torch.arange(2 * spans).remainder(2).bool().repeat_interleave(runs)


def corrupt(block, mask, sentinel_ids: list[int], eos_id: int):
    """(input ids, target ids) of one block (a 1-d tensor) under its noise mask, each ended by eos."""
    import torch

    eos = torch.tensor([eos_id], dtype=block.dtype)
    starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])  # the first token of each noise span
    if not starts.any():
        return torch.cat([block, eos]), eos
    sentinels = torch.tensor(sentinel_ids[:int(starts.sum())], dtype=block.dtype)
    sentinel_at = sentinels[(starts.cumsum(0) - 1).clamp(min=0)]  # the sentinel of the span a token is in (or after)
    inputs = torch.where(starts, sentinel_at, block)[starts | ~mask]  # a span -> its sentinel
    # Each noise token, its span's sentinel in front of the first one (row-major: sentinel, then token).
    targets = torch.stack([sentinel_at, block], dim=1)[torch.stack([starts, mask], dim=1)]
    return torch.cat([inputs, eos]), torch.cat([targets, eos])


def check_sentinels(tokenizer, count: int, key: str) -> None:
    """The tokenizer has `<extra_id_0>` ... `<extra_id_{count-1}>` (a T5 tokenizer's 100) and an eos token."""
    vocabulary = tokenizer.get_vocab()
    missing = [name for name in sentinel_names(count) if name not in vocabulary]
    if missing:
        raise LlmkitError(f"{key}: the tokenizer of {tokenizer.name_or_path} lacks the sentinel tokens span "
                          f"corruption needs ({SENTINEL.format(0)} to {SENTINEL.format(count - 1)}, as T5's have; "
                          f"{missing[0]} is missing); use a T5 tokenizer or leave {key} unset to train one")
    if tokenizer.eos_token_id is None:
        raise LlmkitError(f"{key}: the tokenizer of {tokenizer.name_or_path} has no eos token, which ends "
                          "span-corruption inputs and targets")
