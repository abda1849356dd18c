"""Which examples go into which micro-batch on which process, and padding them into tensors.

The data order is a pure function of (seed, epoch): every process computes the same permutation
and takes its own slice, so no sampler state needs saving and any step can be reached at once.
Each optimizer step takes a global batch of per_device x processes x accumulation examples, cut
into `processes x accumulation` micro-batches; micro-batch j of process r is piece j*processes + r.
The epoch's tail becomes one smaller step when every piece gets at least one example.

With lengths given (train.group_by_length), each run of GROUP_STEPS global batches of the shuffled
order is sorted by length before it is cut into steps, and the full steps are then shuffled: a
batch holds examples of similar length, so little compute goes to padding, while which examples
meet in a step is still random and still a pure function of (seed, epoch).
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_examples: int, per_device: int, processes: int, accumulation: int) -> int:
    full, tail = divmod(num_examples, per_device * processes * accumulation)
    return full + (tail >= processes * accumulation)


GROUP_STEPS = 64  # global batches sorted together by length: a wider window pads less but mixes less


def epoch_plan(num_examples: int, seed: int, epoch: int, per_device: int, processes: int, process_index: int,
               accumulation: int, lengths: np.ndarray | None = None) -> list[list[list[int]]]:
    """This process's micro-batches for every step of `epoch`: plan[step][micro] -> example indices."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    global_batch = per_device * processes * accumulation
    steps = steps_per_epoch(num_examples, per_device, processes, accumulation)
    step_order = np.arange(steps)
    if lengths is not None:
        window = GROUP_STEPS * global_batch
        for start in range(0, num_examples, window):
            chunk = order[start:start + window]
            # Longest first within a window; stable, so ties keep the shuffled order.
            order[start:start + window] = chunk[np.argsort(-lengths[chunk], kind="stable")]
        full_steps = num_examples // global_batch
        step_order[:full_steps] = rng.permutation(full_steps)  # the short tail step stays last
    plan = []
    for step in step_order:
        pieces = np.array_split(order[step * global_batch:(step + 1) * global_batch], processes * accumulation)
        plan.append([pieces[j * processes + process_index].tolist() for j in range(accumulation)])
    return plan


def task_schedule(seed: int, weights: list[float], total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Which task each optimizer step trains (drawn in proportion to `weights`), and how many steps
    of that task came before it: a pure function of its arguments, so resuming reaches any step."""
    weights = np.asarray(weights, dtype=float)
    if len(weights) == 1:
        tasks = np.zeros(total_steps, dtype=int)
    else:
        tasks = np.random.default_rng([seed, len(weights)]).choice(len(weights), total_steps, p=weights / weights.sum())
    index = np.zeros(total_steps, dtype=int)
    for task in range(len(weights)):
        steps = tasks == task
        index[steps] = np.arange(steps.sum())
    return tasks, index


class StepPlan:
    """Per optimizer step: the task it trains, that task's epoch, and this process's micro-batches
    (example ids). A pure function of the arguments and the step; plans are built once per task epoch."""

    def __init__(self, sizes: list[int], task_epochs: list[int], weights: list[float], total_steps: int, seed: int,
                 per_device: int, processes: int, process_index: int, accumulation: int,
                 lengths: list[np.ndarray | None]):
        self.sizes, self.task_epochs, self.seed, self.lengths = sizes, task_epochs, seed, lengths
        self.layout = (per_device, processes, process_index, accumulation)
        self.tasks, self.task_steps = task_schedule(seed, weights, total_steps)
        self._plans = [(None, None)] * len(sizes)  # per task: (epoch, that epoch's plan)

    def __call__(self, step: int) -> tuple[int, int, list[list[int]]]:
        task = int(self.tasks[step])
        epoch, index = divmod(int(self.task_steps[step]), self.task_epochs[task])
        if self._plans[task][0] != epoch:
            plan = epoch_plan(self.sizes[task], self.seed + task, epoch, *self.layout, self.lengths[task])
            self._plans[task] = (epoch, plan)
        return task, epoch, self._plans[task][1][index]


def length_batches(lengths, batch_size: int):
    """Indices in batches of `batch_size`, shortest first (ties in input order): inputs of (nearly) equal length
    share a batch, so little compute goes to padding. `infer` batches this way."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def example_lengths(dataset) -> np.ndarray:
    """Tokens per example, read from the Arrow column without building Python lists; a family whose example
    is several sequences (multiple choice) gives its own in a `length` column."""
    import pyarrow.compute as pc

    if "length" in dataset.column_names:
        return dataset.with_format("arrow")["length"].to_numpy()
    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_numpy()


def eval_shard(num_examples: int, processes: int, process_index: int) -> range:
    """A contiguous slice per process, so gathering the shards in rank order keeps the file order."""
    bounds = np.linspace(0, num_examples, processes + 1).astype(int)
    return range(bounds[process_index], bounds[process_index + 1])


def pad(sequences: list[list[int]], value: int, as_numpy: bool = False):
    """Rows of ids padded on the right into one int64 tensor (a numpy array with `as_numpy`: ONNX Runtime's)."""
    out = np.full((len(sequences), max(map(len, sequences))), value, dtype=np.int64)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = seq
    return out if as_numpy else _tensor(out)


def pad_inputs(rows: dict[str, list], pad_token_id: int, as_numpy: bool = False) -> dict:
    """input_ids / token_type_ids padded on the right, and the attention mask that goes with them."""
    input_ids = pad(rows["input_ids"], pad_token_id, as_numpy=True)
    lengths = np.array([len(seq) for seq in rows["input_ids"]])
    batch = {"input_ids": input_ids,
             "attention_mask": (np.arange(input_ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)}
    if "token_type_ids" in rows:
        batch["token_type_ids"] = pad(rows["token_type_ids"], 0, as_numpy=True)
    return batch if as_numpy else {k: _tensor(v) for k, v in batch.items()}


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array)
