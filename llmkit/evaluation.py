"""Score a model on a dataset across all processes: each takes a contiguous shard (possibly empty),
sums its loss, and the sums and per-example outputs are combined over processes, so every example
counts once and a process without batches still joins the collectives instead of hanging."""

from __future__ import annotations

EVAL_EPOCH = -1  # masking during evaluation is the same every time (a fixed pseudo-epoch)


def evaluate(accelerator, model, objective, dataset, batch_size: int, outputs_to: list | None = None) -> dict:
    """The metrics of `objective` on `dataset`; its per-example outputs, in dataset order, go to `outputs_to`."""
    import torch
    from accelerate.utils import gather_object

    from llmkit.data.batching import eval_shard, example_lengths

    shard = eval_shard(len(dataset), accelerator.num_processes, accelerator.process_index)
    # Batches of similar length pad less; outputs are put back in file order before gathering.
    order = (shard.start + example_lengths(dataset.select(shard)).argsort(kind="stable")).tolist()
    # The bare module: a DDP wrapper would try to sync buffers with processes that have no batch.
    module = accelerator.unwrap_model(model)
    was_training = module.training
    module.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    outputs = []
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            batch = {k: v.to(accelerator.device) for k, v in objective.collate(dataset[ids], ids, EVAL_EPOCH).items()}
            loss_sum, count = objective.loss(module, batch)
            totals += torch.stack([loss_sum.double(), count.double()])
            outputs.extend(zip(ids, objective.eval_outputs(module, batch)))
    module.train(was_training)
    outputs = [output for _, output in sorted(outputs, key=lambda pair: pair[0])]
    totals = accelerator.reduce(totals, reduction="sum")
    if accelerator.num_processes > 1:
        outputs = gather_object(outputs)
    metrics = objective.metrics(totals[0].item(), int(totals[1].item()), outputs)
    if outputs_to is not None:
        outputs_to.extend(outputs)
    return {"num_examples": len(dataset), **metrics}


def evaluate_tasks(accelerator, model, tasks, batch_size: int) -> dict:
    """Each task with validation data. In a multi-task run the metrics are named `<task>_<metric>`,
    and `loss` is the mean of the tasks' losses."""
    if tasks[0].name is None:
        return evaluate(accelerator, model, tasks[0].objective, tasks[0].eval_data, batch_size)
    models = accelerator.unwrap_model(model).models
    return combine_tasks({task.name: evaluate(accelerator, models[task.name], task.objective, task.eval_data,
                                              batch_size)
                          for task in tasks if task.eval_data is not None})


def combine_tasks(results: dict[str, dict]) -> dict:
    """Several tasks' metrics as one record: `<task>_<metric>`, and `loss`, the mean of their losses."""
    return {"loss": sum(r["loss"] for r in results.values()) / len(results),
            **{f"{task}_{name}": value for task, r in results.items() for name, value in r.items()}}
