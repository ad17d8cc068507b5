"""dynq's forward pass against llama.cpp's logits (``reference_logits.npz``, produced by
``tests/data/engine/make_reference_logits.py``) on two 128-token chunks of a stored text.

"f32": llama.cpp on the same weights dequantized to F32 — the arithmetic is exact in both, so
the logits must agree closely (top-1 >= 99.5%, mean KLD <= 1e-4).
"quant": llama.cpp on the quantized file, whose CPU backend rounds activations to 8 bits
before each quantized matrix multiply; that rounding alone moves llama.cpp's own logits by a
KLD of a few 1e-3 on these small models, so only a looser bound holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynq.engine.model import load_model
from tests.engine.conftest import DATA, model_path

REF = np.load(DATA / "reference_logits.npz")
FIRST = 64  # ctx 128: positions 64..126 are scored


def topk_kld(ref_ids, ref_lp, logq):
    """KL(ref || dynq) over the reference's top-k entries plus one bucket for the rest."""
    p = np.exp(ref_lp.astype(np.float64))
    lq = np.take_along_axis(logq, ref_ids, axis=-1)
    head = (p * (ref_lp - lq)).sum(-1)
    p_rest = np.clip(1 - p.sum(-1), 1e-300, None)
    q_rest = np.clip(1 - np.exp(lq).sum(-1), 1e-300, None)
    return head + p_rest * np.log(p_rest / q_rest)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def run(request):
    name = request.param
    model = load_model(model_path(request, name))
    tokens = torch.from_numpy(REF[f"{name}/tokens"].astype(np.int64))
    add_bos = bool(model.gf.get("tokenizer.ggml.add_bos_token", False))
    if add_bos:
        tokens[:, 0] = int(model.gf.get("tokenizer.ggml.bos_token_id"))
    h = model.hidden(tokens)
    logq = torch.log_softmax(model.project(h[:, FIRST:127]).double(), -1).numpy()
    model.release()
    targets = REF[f"{name}/tokens"][:, FIRST + 1 :].astype(np.int64)
    return name, logq, targets


def metrics(name, kind, logq):
    ids, lp = REF[f"{name}/{kind}/ids"], REF[f"{name}/{kind}/logprobs"]
    kld = topk_kld(ids, lp, logq)
    top1 = (logq.argmax(-1) == ids[..., 0]).mean()
    return kld.mean(), top1


def test_matches_llama_cpp_f32(run):
    name, logq, _ = run
    kld, top1 = metrics(name, "f32", logq)
    print(f"{name} vs llama.cpp f32: mean KLD {kld:.2e}, top-1 {top1:.4f}")
    assert top1 >= 0.995
    assert kld <= 1e-4


def test_close_to_llama_cpp_quantized(run):
    name, logq, _ = run
    kld, top1 = metrics(name, "quant", logq)
    print(f"{name} vs llama.cpp quantized arithmetic: mean KLD {kld:.2e}, top-1 {top1:.4f}")
    assert top1 >= 0.90
    assert kld <= 1e-2


def test_perplexity_matches_llama_cpp(run):
    name, logq, targets = run
    nll = -np.take_along_axis(logq, targets[..., None], -1).mean()
    ppl = math.exp(nll)
    ref = float(REF[f"{name}/f32/ppl"])
    assert abs(ppl / ref - 1) < 2e-3


def test_gemma3_sliding_window_beyond_512_tokens(gemma3_path):
    """One 1024-token window: Gemma 3's local layers see only the last 512 positions."""
    model = load_model(gemma3_path)
    tokens = torch.from_numpy(REF["gemma3/swa/tokens"].astype(np.int64))
    tokens[:, 0] = int(model.gf.get("tokenizer.ggml.bos_token_id"))
    h = model.hidden(tokens)
    logq = torch.log_softmax(model.project(h[:, 512:1023]).double(), -1).numpy()
    model.release()
    kld = topk_kld(REF["gemma3/swa/ids"], REF["gemma3/swa/logprobs"], logq).mean()
    top1 = (logq.argmax(-1) == REF["gemma3/swa/ids"][..., 0]).mean()
    print(f"gemma3 ctx 1024 vs llama.cpp f32: mean KLD {kld:.2e}, top-1 {top1:.4f}")
    assert top1 >= 0.995
    assert kld <= 1e-4
