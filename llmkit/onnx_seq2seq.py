"""An encoder-decoder (T5, BART, Marian, a BERT2BERT EncoderDecoderModel) as three ONNX graphs, for generation on
ONNX Runtime (llmkit.onnx_generate):

    encoder.onnx            the encoder, run once per input
    decoder.onnx            the first step: every decoder layer's self- and cross-attention keys/values come out
    decoder_with_past.onnx  each next step: one token in, its self-attention keys/values appended; the cross-
                            attention keys/values of the first step are reused, never recomputed

The decoder graphs wrap the model's own forward with transformers' EncoderDecoderCache built from (and taken apart
into) plain tensors, so any encoder-decoder that uses that cache exports the same way. The export is checked
twice: every graph's outputs against torch's on the check batch, and a greedy generation against
`model.generate()`, token for token.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from llmkit.errors import LlmkitError
from llmkit.onnx_export import graph_difference, trace_graph, traced
from llmkit.onnx_generate import DECODER, DECODER_WITH_PAST, ENCODER, OnnxSeq2Seq, check_generation, kv_names

CHECK_TOKENS = 8  # the greedy generation the export is checked on


def export_encoder_decoder(model, inputs: dict, folder: Path) -> dict:
    """Write the three graphs of `model` traced on `inputs` (input_ids, attention_mask) into `folder`; returns
    what onnx.json records of them."""
    import torch

    tokens = check_generation(model.generation_config.to_dict())
    if tokens["decoder_start_token_id"] is None or tokens["eos_token_id"] is None:
        raise LlmkitError("OUTPUT_DIR: the model's generation config has no decoder_start_token_id or eos_token_id")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    encoder, first = traced(_encode, model), traced(_first_step, model)
    with torch.no_grad():
        hidden = encoder(ids, mask)
        start = torch.full((ids.shape[0], 1), tokens["decoder_start_token_id"])
        first_outputs = first(start, hidden, mask)
    layers = (len(first_outputs) - 1) // 4
    present, cross, past = kv_names("present", layers), kv_names("cross", layers), kv_names("past", layers)
    graphs = {  # file: (module, its inputs by name, its outputs' names)
        ENCODER: (encoder, {"input_ids": ids, "attention_mask": mask}, ["encoder_hidden_states"]),
        DECODER: (first, {"decoder_input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask},
                  ["logits", *present, *cross]),
        DECODER_WITH_PAST: (traced(_next_step, model, layers, hidden.shape[-1]),
                            {"decoder_input_ids": torch.full_like(start, tokens["eos_token_id"]),
                             "encoder_attention_mask": mask, **dict(zip(past + cross, first_outputs[1:]))},
                            ["logits", *present])}
    for name, (module, feeds, outputs) in graphs.items():
        trace_graph(module, feeds, outputs, {n: AXES[n.split(".")[0]] for n in [*feeds, *outputs]}, folder / name)
    difference = max(graph_difference(module, feeds, folder / name) for name, (module, feeds, _) in graphs.items())
    info = {"decoder_layers": layers, "generation": tokens, "max_abs_diff_fp32": difference}
    _check_generation(model, folder, info, inputs)
    return info


# the axes that vary, by input or output name (before its first dot): keys/values are [batch, heads, length, dim]
AXES = {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"},
        "encoder_attention_mask": {0: "batch", 1: "source"}, "encoder_hidden_states": {0: "batch", 1: "source"},
        "decoder_input_ids": {0: "batch", 1: "target"}, "logits": {0: "batch", 1: "target"},
        "past": {0: "batch", 2: "past"}, "present": {0: "batch", 2: "present"}, "cross": {0: "batch", 2: "source"}}


def _check_generation(model, folder: Path, info: dict, inputs: dict) -> None:
    """ONNX Runtime's greedy generation from the graphs equals model.generate()'s, token for token."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=CHECK_TOKENS).numpy()
    ours = OnnxSeq2Seq(folder, info).generate(inputs["input_ids"].numpy(), inputs["attention_mask"].numpy(),
                                              max_new_tokens=CHECK_TOKENS)
    if ours.shape != expected.shape or not np.array_equal(ours, expected):
        raise LlmkitError(f"export: the ONNX graphs generate {ours.tolist()} where torch generates "
                          f"{expected.tolist()} on the check batch; the export is not kept")


def _cache_keyword(model) -> str:
    """transformers 5 renames the forward's past_key_values to cache (the old name warns until 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _encode(model, ids, mask):
    return model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state


def _decode(model, cache, decoder_ids, hidden, mask):
    output = model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=True,
                   **{_cache_keyword(model): cache})
    return output.logits, output.cache


def _flat(layers) -> list:
    return [t for layer in layers for t in (layer.keys, layer.values)]


def _first_step(model, decoder_ids, hidden, mask):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    logits, cache = _decode(model, EncoderDecoderCache(DynamicCache(), DynamicCache()), decoder_ids, hidden, mask)
    return (logits, *_flat(cache.self_attention_cache.layers), *_flat(cache.cross_attention_cache.layers))


def _next_step(model, layers: int, hidden_size: int, decoder_ids, mask, *kv):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    pairs = [(kv[2 * i], kv[2 * i + 1]) for i in range(2 * layers)]
    cache = EncoderDecoderCache(DynamicCache(pairs[:layers]), DynamicCache(pairs[layers:]))
    # the cross-attention keys/values are cached, so the encoder's states are never read: zeros of their shape
    hidden = kv[2 * layers].new_zeros((decoder_ids.shape[0], kv[2 * layers].shape[2], hidden_size))
    logits, cache = _decode(model, cache, decoder_ids, hidden, mask)
    return (logits, *_flat(cache.self_attention_cache.layers))
