"""Generation with an exported encoder-decoder (`llmkit export` of a seq2seq run) on ONNX Runtime, without torch.

    encoder.onnx           input_ids, attention_mask -> encoder_hidden_states                     (once)
    decoder.onnx           the start token, encoder_hidden_states -> logits, present.*, cross.*   (first step)
    decoder_with_past.onnx the last token, past.* (self-attention), cross.* -> logits, present.*   (each next step)

`OnnxSeq2Seq.generate` takes and returns what `model.generate()` does, as numpy arrays: greedy search, or beam
search as transformers 5 runs it (the top 2·beams continuations each step, finished hypotheses scored by their
summed log-probabilities over length ** length_penalty, the same early-stopping heuristic, float32 scores), with
the start, end and padding tokens and the forced first or last token that the export copied from the model's
generation_config.json into onnx.json. So it gives the tokens fp32 torch generates (bf16 autocast on torch may
pick differently where two tokens are nearly tied).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmkit.errors import LlmkitError

ENCODER, DECODER, DECODER_WITH_PAST = "encoder.onnx", "decoder.onnx", "decoder_with_past.onnx"
FILES = (ENCODER, DECODER, DECODER_WITH_PAST)
# the generation tokens this search honours; the settings below, set to anything but their default in
# generation_config.json, would change what generate() gives, and are refused at export
TOKENS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id")
UNSUPPORTED = {"do_sample": False, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
               "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "force_words_ids": None, "sequence_bias": None,
               "min_length": 0, "min_new_tokens": None, "num_beam_groups": 1, "diversity_penalty": 0.0,
               "early_stopping": False, "exponential_decay_length_penalty": None, "renormalize_logits": False,
               "guidance_scale": None, "stop_strings": None, "max_time": None, "num_return_sequences": 1}
DEAD = np.float32(-1e9)  # the score of a continuation that cannot be chosen, in float32 as transformers has it


def kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(layers) for kind in ("key", "value")]


class OnnxSeq2Seq:
    def __init__(self, folder: Path, info: dict):
        import onnxruntime

        def session(name: str):
            return onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])

        self.encoder, self.decoder, self.decoder_with_past = (session(name) for name in FILES)
        self.layers = info["decoder_layers"]
        self.tokens = {name: info["generation"].get(name) for name in TOKENS}
        if self.tokens["pad_token_id"] is None:  # transformers pads finished sequences with the end token then
            self.tokens["pad_token_id"] = self.tokens["eos_token_id"]

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, do_sample: bool = False,
                 max_new_tokens: int = 20, num_beams: int = 1, length_penalty: float = 1.0) -> np.ndarray:
        if do_sample:
            raise LlmkitError("infer.backend onnxruntime: sampling is not supported; it searches greedily or by beams")
        hidden = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        if num_beams > 1:  # every beam of a row reads its row's encoding
            hidden, attention_mask = (np.repeat(a, num_beams, axis=0) for a in (hidden, attention_mask))
            return _beam_search(self, hidden, attention_mask, max_new_tokens, num_beams, length_penalty)
        return _greedy(self, hidden, attention_mask, max_new_tokens)

    def first_step(self, hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list, list]:
        """(last-token logits, self-attention keys/values, cross-attention keys/values) after the start token."""
        start = np.full((hidden.shape[0], 1), self.tokens["decoder_start_token_id"], dtype=np.int64)
        outputs = self.decoder.run(None, {"decoder_input_ids": start, "encoder_hidden_states": hidden,
                                          "encoder_attention_mask": mask})
        n = 2 * self.layers
        return outputs[0][:, -1].astype(np.float32), outputs[1:1 + n], outputs[1 + n:]

    def next_step(self, tokens: np.ndarray, mask: np.ndarray, past: list, cross: list) -> tuple[np.ndarray, list]:
        feeds = {"decoder_input_ids": tokens[:, None].astype(np.int64), "encoder_attention_mask": mask,
                 **dict(zip(kv_names("past", self.layers), past)), **dict(zip(kv_names("cross", self.layers), cross))}
        outputs = self.decoder_with_past.run(None, feeds)
        return outputs[0][:, -1].astype(np.float32), outputs[1:]

    def processed(self, scores: np.ndarray, length: int, max_length: int) -> np.ndarray:
        """transformers' ForcedBOS / ForcedEOS logits processors: the one token allowed at the first generated
        position, and at the last one `max_length` leaves."""
        forced = None
        if length == 1:
            forced = self.tokens["forced_bos_token_id"]
        if length == max_length - 1 and self.tokens["forced_eos_token_id"] is not None:
            forced = self.tokens["forced_eos_token_id"]  # applied after ForcedBOS: it wins where both apply
        if forced is None:
            return scores
        out = np.full_like(scores, -np.inf)
        out[:, forced] = 0.0
        return out


def _greedy(model: OnnxSeq2Seq, hidden, mask, max_new_tokens: int) -> np.ndarray:
    eos, pad = model.tokens["eos_token_id"], model.tokens["pad_token_id"]
    rows, max_length = hidden.shape[0], 1 + max_new_tokens
    sequences = np.full((rows, 1), model.tokens["decoder_start_token_id"], dtype=np.int64)
    finished = np.zeros(rows, dtype=bool)
    logits, past, cross = model.first_step(hidden, mask)
    while True:
        tokens = model.processed(logits, sequences.shape[1], max_length).argmax(-1)
        tokens = np.where(finished, pad, tokens)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        finished |= tokens == eos
        if finished.all() or sequences.shape[1] >= max_length:
            return sequences
        logits, past = model.next_step(tokens, mask, past, cross)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _gather(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """values[b, indices[b, k], ...] per row b."""
    return np.take_along_axis(values, indices.reshape(*indices.shape, *([1] * (values.ndim - 2))), axis=1)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of each row's k highest scores, best first (ties to the lower index, as torch.topk)."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def _beam_search(model: OnnxSeq2Seq, hidden, mask, max_new_tokens: int, beams: int,
                 length_penalty: float) -> np.ndarray:
    """transformers 5's vectorised beam search (`GenerationMixin._beam_search`, early_stopping False), on
    [batch, beams] arrays: each step keeps the top 2·beams continuations, the best `beams` of them that do not
    end go on, and those among the top `beams` that end join the finished hypotheses if they beat them."""
    batch, max_length = hidden.shape[0] // beams, 1 + max_new_tokens
    search = _Beams(model.tokens, batch, beams, max_length, length_penalty)
    logits, past, cross = model.first_step(hidden, mask)
    while True:
        parents = search.step(model.processed(_log_softmax(logits), search.length, max_length))
        if search.over():
            return search.best()
        rows = (parents + np.arange(batch)[:, None] * beams).reshape(-1)
        logits, past = model.next_step(search.running[:, :, search.length - 1].reshape(-1), mask,
                                       [kv[rows] for kv in past], cross)


class _Beams:
    """The state of a beam search: running and finished hypotheses with their scores."""

    def __init__(self, tokens: dict, batch: int, beams: int, max_length: int, length_penalty: float):
        self.eos, self.beams, self.max_length, self.penalty = tokens["eos_token_id"], beams, max_length, length_penalty
        fill = tokens["pad_token_id"] or tokens["eos_token_id"]  # what transformers fills unused positions with
        self.running = np.full((batch, beams, max_length), fill, dtype=np.int64)
        self.running[:, :, 0] = tokens["decoder_start_token_id"]
        self.finished = self.running.copy()
        self.running_scores = np.where(np.arange(beams) == 0, np.float32(0), DEAD)[None].repeat(batch, 0)
        self.scores = np.full((batch, beams), DEAD, dtype=np.float32)
        self.done = np.zeros((batch, beams), dtype=bool)
        self.generated = np.zeros((batch, beams), dtype=np.int64)  # tokens each finished hypothesis generated
        self.improvable = np.ones((batch, 1), dtype=bool)
        self.stops = np.zeros((batch, 2 * beams), dtype=bool)
        self.length = 1

    def step(self, log_probs: np.ndarray) -> np.ndarray:
        """Extends the hypotheses by one token; returns the beam each running one continues."""
        batch, beams, keep = self.running.shape[0], self.beams, 2 * self.beams
        flat = (log_probs.reshape(batch, beams, -1) + self.running_scores[:, :, None]).reshape(batch, -1)
        top = _top(flat, keep)
        vocab = flat.shape[1] // beams
        scores, source, tokens = np.take_along_axis(flat, top, 1), top // vocab, top % vocab
        candidates = _gather(self.running, source).copy()
        candidates[:, :, self.length] = tokens
        self.stops = (tokens == self.eos) | (self.length + 1 >= self.max_length)
        alive = scores + self.stops * DEAD
        chosen = _top(alive, beams)
        self.running, self.running_scores = _gather(candidates, chosen), np.take_along_axis(alive, chosen, 1)
        self._finish(candidates, scores, self.stops & (np.arange(keep) < beams)[None, :])
        self.length += 1
        best_running = self.running_scores[:, :1] / np.float32((self.length - 1) ** self.penalty)
        worst_done = np.where(self.done, self.scores.min(1, keepdims=True), DEAD)
        self.improvable &= (best_running > worst_done).any(-1, keepdims=True)
        return np.take_along_axis(source, chosen, 1)

    def _finish(self, candidates: np.ndarray, scores: np.ndarray, ended: np.ndarray) -> None:
        """The candidates that `ended` join the finished hypotheses, scored over length ** length_penalty."""
        normalised = (scores / np.float32(self.length**self.penalty) + (~self.improvable) * DEAD
                      + (~ended) * DEAD)
        merged = np.concatenate([self.scores, normalised], axis=1)
        best = _top(merged, self.beams)
        self.finished = _gather(np.concatenate([self.finished, candidates], axis=1), best)
        self.scores = np.take_along_axis(merged, best, 1)
        self.done = np.take_along_axis(np.concatenate([self.done, ended], axis=1), best, 1)
        lengths = np.full(ended.shape, self.length)
        self.generated = np.take_along_axis(np.concatenate([self.generated, lengths], axis=1), best, 1)

    def over(self) -> bool:
        return not self.improvable.any() or self.stops.all()

    def best(self) -> np.ndarray:
        """Each row's best finished hypothesis, cut after the longest of them."""
        return self.finished[:, 0, :1 + self.generated[:, 0].max()]


def check_generation(config: dict) -> dict:
    """The generation tokens an export keeps (from generation_config.json); a setting this search does not honour
    (sampling, repetition penalties, banned or forced words, minimum lengths, early stopping) is one line, before
    any export."""
    unsupported = sorted(k for k, default in UNSUPPORTED.items() if config.get(k, default) not in (default, None))
    eos = config.get("eos_token_id")
    if isinstance(eos, list):  # several end tokens: transformers keeps (1 + their number)·beams continuations
        if len(eos) > 1:
            unsupported.append("several eos_token_id")
        config = {**config, "eos_token_id": eos[0] if eos else None}
    if unsupported:
        raise LlmkitError(f"OUTPUT_DIR: generation_config.json sets {', '.join(unsupported)}, which the ONNX "
                          "generation does not honour (it searches greedily or by beams); export refused")
    return {name: config.get(name) for name in TOKENS}
