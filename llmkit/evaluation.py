"""Score a model on a dataset across all processes: each takes a contiguous shard (possibly empty),
sums its loss, and the sums and per-example outputs are combined over processes, so every example
counts once and a process without batches still joins the collectives instead of hanging."""

from __future__ import annotations

EVAL_EPOCH = -1  # masking during evaluation is the same every time (a fixed pseudo-epoch)


def evaluate(accelerator, model, objective, dataset, batch_size: int) -> dict:
    import torch
    from accelerate.utils import gather_object

    from llmkit.data.batching import eval_shard

    shard = eval_shard(len(dataset), accelerator.num_processes, accelerator.process_index)
    # The bare module: a DDP wrapper would try to sync buffers with processes that have no batch.
    module = accelerator.unwrap_model(model)
    was_training = module.training
    module.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    outputs = []
    with torch.no_grad(), accelerator.autocast():
        for start in range(shard.start, shard.stop, batch_size):
            ids = list(range(start, min(start + batch_size, shard.stop)))
            batch = {k: v.to(accelerator.device) for k, v in objective.collate(dataset[ids], ids, EVAL_EPOCH).items()}
            loss_sum, count = objective.loss(module, batch)
            totals += torch.stack([loss_sum.double(), count.double()])
            outputs.extend(objective.eval_outputs(module, batch))
    module.train(was_training)
    totals = accelerator.reduce(totals, reduction="sum")
    if accelerator.num_processes > 1:
        outputs = gather_object(outputs)
    metrics = objective.metrics(totals[0].item(), int(totals[1].item()), outputs)
    return {"num_examples": len(dataset), **metrics}
