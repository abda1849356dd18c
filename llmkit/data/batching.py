"""Which examples go into which micro-batch on which process, and padding them into tensors.

The data order is a pure function of (seed, epoch): every process computes the same permutation
and takes its own slice, so no sampler state needs saving and any step can be reached at once.
Each optimizer step takes a global batch of per_device x processes x accumulation examples, cut
into `processes x accumulation` micro-batches; micro-batch j of process r is piece j*processes + r.
The epoch's tail becomes one smaller step when every piece gets at least one example.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_examples: int, per_device: int, processes: int, accumulation: int) -> int:
    full, tail = divmod(num_examples, per_device * processes * accumulation)
    return full + (tail >= processes * accumulation)


def epoch_plan(num_examples: int, seed: int, epoch: int, per_device: int, processes: int, process_index: int,
               accumulation: int) -> list[list[list[int]]]:
    """This process's micro-batches for every step of `epoch`: plan[step][micro] -> example indices."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    global_batch = per_device * processes * accumulation
    plan = []
    for step in range(steps_per_epoch(num_examples, per_device, processes, accumulation)):
        pieces = np.array_split(order[step * global_batch:(step + 1) * global_batch], processes * accumulation)
        plan.append([pieces[j * processes + process_index].tolist() for j in range(accumulation)])
    return plan


def eval_shard(num_examples: int, processes: int, process_index: int) -> range:
    """A contiguous slice per process, so gathering the shards in rank order keeps the file order."""
    bounds = np.linspace(0, num_examples, processes + 1).astype(int)
    return range(bounds[process_index], bounds[process_index + 1])


def pad(sequences: list[list[int]], value: int):
    import torch

    out = torch.full((len(sequences), max(map(len, sequences))), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def pad_inputs(rows: dict[str, list], pad_token_id: int) -> dict:
    """input_ids / token_type_ids padded on the right, and the attention mask that goes with them."""
    import torch

    input_ids = pad(rows["input_ids"], pad_token_id)
    lengths = torch.tensor([len(seq) for seq in rows["input_ids"]])
    batch = {"input_ids": input_ids,
             "attention_mask": (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()}
    if "token_type_ids" in rows:
        batch["token_type_ids"] = pad(rows["token_type_ids"], 0)
    return batch
