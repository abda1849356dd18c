"""T5's span corruption (`pretrain.objective: span_corruption`), the denoising objective of encoder-decoders
(AutoModelForSeq2SeqLM, e.g. T5 built from model.config): in each packed block, spans of noise tokens are
dropped from the encoder input, one sentinel in place of each, and the decoder writes each sentinel followed by
its span, then eos (llmkit.data.spans). The loss and perplexity are over the target tokens; `infer` fills the
sentinels of an input that has them: {text, generated, filled}."""

from __future__ import annotations

from dataclasses import replace

from llmkit.data.batching import pad, pad_inputs
from llmkit.data.spans import SENTINEL, check_sentinels, corrupt, noise_counts, noise_mask, raw_length, sentinel_names
from llmkit.errors import LlmkitError
from llmkit.objectives.base import IGNORE_INDEX, SEQ2SEQ_LM, language_model_metrics, model_inputs, pad_token_id
from llmkit.objectives.objective import Objective

EXAMPLE = "the <extra_id_0> sat on the <extra_id_1> ."


class SpanCorruption(Objective):
    """Noise masks are drawn per (seed, epoch, example), as masked-LM's are: the same under any batch layout,
    process count or resume."""

    model_kind = SEQ2SEQ_LM
    pipeline_task = None  # transformers 5 has no text2text-generation pipeline: the card shows generate
    metric_names = ("loss", "perplexity", "num_predicted_tokens")
    causal = True  # the corpus is one stream with eos after each document and no [CLS], as T5 packs it
    sentinel_tokens = 100  # T5's <extra_id_0> ... <extra_id_99>: added to a trained tokenizer, required of a given one
    generates = True  # `infer` generates with the torch model itself (encoder once, decoder token by token)

    def __init__(self, cfg, tokenizer, thorough: bool = False):
        super().__init__(cfg, tokenizer, thorough)
        s = self.section
        self.noise = (s.noise_density, s.mean_noise_span_length)
        spans = noise_counts(raw_length(cfg.data.max_seq_length, *self.noise), *self.noise)[1]
        if spans > self.sentinel_tokens:
            raise LlmkitError(f"pretrain.mean_noise_span_length: a block of data.max_seq_length "
                              f"{cfg.data.max_seq_length} would have {spans} noise spans, more than the "
                              f"{self.sentinel_tokens} sentinel tokens; use longer spans or shorter blocks")
        check_sentinels(tokenizer, self.sentinel_tokens, "tokenizer.name_or_path")
        self.sentinel_ids = tokenizer.convert_tokens_to_ids(sentinel_names(self.sentinel_tokens))
        self.seed = cfg.seed

    @classmethod
    def layout(cls, section):
        return replace(super().layout(section), span_noise=(section.noise_density, section.mean_noise_span_length),
                       sentinel_tokens=cls.sentinel_tokens)

    def wrap(self, model):
        """The model, starting its decoder at pad as T5 does: a T5 config built from model.config has no
        decoder_start_token_id (the labels' shift right and generate need one, and the saved config keeps it)."""
        if getattr(model.config, "decoder_start_token_id", None) is None:
            model.config.decoder_start_token_id = model.generation_config.decoder_start_token_id = \
                pad_token_id(self.tokenizer)
        return model

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        """Encoder inputs (padded) and decoder labels (padded with IGNORE_INDEX; the loss shifts them right)."""
        import torch

        from llmkit.objectives.masked_lm import example_generator

        inputs, targets = [], []
        for block, i in zip(rows["input_ids"], example_ids):
            block = torch.as_tensor(block, dtype=torch.long)
            mask = noise_mask(len(block), *self.noise, example_generator(self.seed, epoch, i))
            source, target = corrupt(block, mask, self.sentinel_ids, self.tokenizer.eos_token_id)
            inputs.append(source)
            targets.append(target)
        batch = pad_inputs({"input_ids": inputs}, pad_token_id(self.tokenizer))
        batch["labels"] = pad(targets, IGNORE_INDEX)
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    def loss(self, module, batch):
        import torch.nn.functional as F

        from llmkit.objectives.seq2seq import decoder_inputs, model_config

        labels = batch["labels"]  # not passed on: the model would compute a loss of its own, unused
        logits = module(**model_inputs(batch), decoder_input_ids=decoder_inputs(labels, model_config(module))).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        return loss, self.count(batch)

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return language_model_metrics(loss_sum, count)

    @classmethod
    def card_usage(cls, folder: str) -> list[str]:
        return [*super().card_usage(folder), "",
                "# Each <extra_id_N> stands for a dropped span; the model writes each sentinel and its span, in order.",
                f'inputs = tokenizer("{EXAMPLE}" + tokenizer.eos_token, add_special_tokens=False, return_tensors="pt")',
                "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20)[0]))"]

    def predict(self, model, examples: list[dict], run) -> list[dict]:
        """{text, generated, filled}: the decoder's output (each sentinel and its span) and the text with
        each sentinel replaced by its span, a batch of inputs per generate call (greedy unless infer.do_sample)."""
        import torch
        from accelerate.utils import set_seed

        g = self.cfg.infer
        sampling = {"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p} if g.do_sample else {}
        rows = []
        for start in range(0, len(examples), run.batch_size):
            chunk = examples[start:start + run.batch_size]
            encoded = [self._encode(e["text"], start + n) for n, e in enumerate(chunk)]
            batch = pad_inputs({"input_ids": encoded}, pad_token_id(self.tokenizer))
            set_seed(self.cfg.seed)  # the same inputs and seed sample the same text
            with torch.inference_mode(), run.accelerator.autocast():
                output = model.generate(**{k: v.to(run.accelerator.device) for k, v in batch.items()},
                                        max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, **sampling)
            rows += [{**e, **self._filled(e["text"], ids[1:])} for e, ids in zip(chunk, output.tolist())]
        return rows

    def _encode(self, text: str, index: int) -> list[int]:
        """The input's ids as training's inputs are: no special tokens but the sentinels, ended by eos."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:self.cfg.data.max_seq_length - 1]
        if not set(ids) & set(self.sentinel_ids):
            raise LlmkitError(f"--input: row {index + 1} has no sentinel token to fill "
                              f"({SENTINEL.format(0)}, ...; e.g. {EXAMPLE!r})")
        return [*ids, self.tokenizer.eos_token_id]

    def _filled(self, text: str, ids: list[int]) -> dict:
        """`ids`: the generated tokens after the decoder's start token, up to eos."""
        eos, sentinels = self.tokenizer.eos_token_id, set(self.sentinel_ids)
        ids = ids[:ids.index(eos)] if eos in ids else ids
        specials = set(self.tokenizer.all_special_ids) - sentinels  # pad, a BPE tokenizer's <s>
        ids = [t for t in ids if t not in specials]
        spans, current = {}, None
        for t in ids:  # each sentinel's tokens, up to the next sentinel
            if t in sentinels:
                current = spans.setdefault(self.tokenizer.convert_ids_to_tokens(t), [])
            elif current is not None:
                current.append(t)
        filled = text
        for sentinel, span in spans.items():
            filled = filled.replace(sentinel, self.tokenizer.decode(span).strip(), 1)
        return {"generated": self.tokenizer.decode(ids).strip(), "filled": filled}
