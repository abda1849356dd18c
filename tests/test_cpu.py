"""The CPU speed-ups (llmkit/cpu.py) compute what PyTorch's own dropout and attention compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmkit.cpu import FastDropout, attention, dropout


def test_dropout_keeps_each_element_with_probability_one_minus_p_and_scales_it():
    x = torch.randn(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 4 * (0.9 * 0.1 / x.numel()) ** 0.5  # within 4 sigma
    assert torch.allclose(y[kept], x[kept] / 0.9)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1 / 0.9))
    torch.manual_seed(0)  # seeded by torch's generator: a resumed run redraws the same masks
    assert torch.equal(dropout(x, 0.1), y)
    rows = dropout(torch.ones(2000, 64), 0.5).ne(0).float().mean(1)  # no pattern along the flattened tensor
    assert rows.std() < 0.1 and abs(rows.mean() - 0.5) < 0.01


@pytest.mark.parametrize("case", ["none", "bool", "float", "causal", "scale", "gqa"])
def test_attention_is_sdpa_when_nothing_is_dropped(case):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8)
    keys_seen = torch.rand(2, 1, 7, 7) > 0.3
    keys_seen[..., 0] = True  # every query sees a key
    kwargs = {"none": {}, "bool": {"attn_mask": keys_seen}, "float": {"attn_mask": torch.randn(2, 1, 7, 7)},
              "causal": {"is_causal": True}, "scale": {"scale": 0.3}, "gqa": {"enable_gqa": True}}[case]
    if case == "gqa":
        k, v = k[:, :2], v[:, :2]
    # p = 1e-12 takes the dropout path, and drops nothing (the chance of a single drop is ~5e-10)
    ours = attention(q, k, v, dropout_p=1e-12, **kwargs)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, **kwargs), atol=1e-6)


def test_fast_dropout_replaces_training_dropout_only():
    x = torch.randn(64, 32)
    q = k = v = torch.randn(2, 2, 5, 4)
    torch.manual_seed(1)
    expected = dropout(x, 0.2), attention(q, k, v, dropout_p=0.3)
    torch.manual_seed(1)
    with FastDropout():
        got = torch.nn.Dropout(0.2)(x), F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
        untouched = (F.dropout(x, 0.2, training=False), torch.nn.Dropout(0.0)(x),
                     F.scaled_dot_product_attention(q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.equal(untouched[0], x) and torch.equal(untouched[1], x)
    assert torch.equal(untouched[2], F.scaled_dot_product_attention(q, k, v))


def test_attention_that_trains_takes_the_matmul_path_and_evaluation_the_kernel():
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    trained = q.clone().requires_grad_()
    with FastDropout():
        out = F.scaled_dot_product_attention(trained, k, v, is_causal=True)
        with torch.no_grad():
            evaluated = F.scaled_dot_product_attention(trained, k, v, is_causal=True)
    assert torch.equal(out, attention(trained, k, v, is_causal=True))  # the matmul path, bitwise
    assert torch.equal(evaluated, F.scaled_dot_product_attention(q, k, v, is_causal=True))  # the kernel
    out.sum().backward()
    reference = q.clone().requires_grad_()
    F.scaled_dot_product_attention(reference, k, v, is_causal=True).sum().backward()
    assert torch.allclose(trained.grad, reference.grad, atol=1e-5)


def test_a_bert_trains_under_fast_dropout_in_bf16():
    """Every dropout of a BERT (embeddings, attention probabilities, both residual branches) goes through
    the fast path: with all of them at p ~ 0 the training forward is the eval forward, and at p = 0.1
    the step is reproducible from the seed."""
    from transformers import BertConfig, BertForMaskedLM

    def model(p):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, hidden_dropout_prob=p, attention_probs_dropout_prob=p)
        return BertForMaskedLM(config)

    ids = torch.randint(5, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    quiet = model(1e-12)
    with FastDropout():
        train_logits = quiet.train()(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(train_logits, quiet.eval()(input_ids=ids, attention_mask=mask).logits, atol=1e-5)

    def grads(seed):
        net = model(0.1).train()
        torch.manual_seed(seed)
        with FastDropout(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        return [p.grad for p in net.parameters() if p.grad is not None]

    first, again, other = grads(3), grads(3), grads(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
