"""Causal language modelling (`pretrain.objective: clm`): GPT-2- / Llama-style next-token prediction on one
stream of blocks with eos between documents, next-token perplexity, and text generation in `infer`."""

from __future__ import annotations

from llmkit.data.batching import pad_inputs
from llmkit.objectives.base import IGNORE_INDEX, ModelKind, language_model_metrics, model_inputs, pad_token_id
from llmkit.objectives.objective import Objective

CAUSAL_LM = ModelKind("AutoModelForCausalLM", ("ForCausalLM", "LMHeadModel"), "causal-lm", "pretrain")


class CausalLM(Objective):
    """Each real token is the target of the position before it."""

    model_kind = CAUSAL_LM
    pipeline_task = "text-generation"
    onnx_outputs = {"logits": ("batch", "sequence")}  # exported; infer's generation runs on torch
    generates = True
    metric_names = ("loss", "perplexity", "num_predicted_tokens")
    causal = True

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = pad_inputs(rows, pad_token_id(self.tokenizer))
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch

    def count(self, batch):
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def loss(self, module, batch):
        import torch.nn.functional as F

        logits = module(**model_inputs(batch)).logits[:, :-1]
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"][:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, self.count(batch)

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return language_model_metrics(loss_sum, count)

    def predict(self, model, examples: list[dict], run) -> list[dict]:
        """{text, generated}: what the model writes after each text, as infer's generation settings say."""
        return [{**e, "generated": self._generate(model, e["text"], run.accelerator)} for e in examples]

    def _generate(self, model, prompt: str, accelerator) -> str:
        """One prompt at a time (no left padding to get right), without special tokens: training streams
        carry none but eos. Each prompt is seeded alike, so the same prompt and seed sample the same text."""
        import torch
        from accelerate.utils import set_seed

        g = self.cfg.infer
        set_seed(self.cfg.seed)
        inputs = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(accelerator.device)
        sampling = {"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p} if g.do_sample else {}
        with torch.inference_mode(), accelerator.autocast():
            output = model.generate(**inputs, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, **sampling,
                                    pad_token_id=pad_token_id(self.tokenizer))
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
