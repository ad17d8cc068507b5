"""dynq.evaluate and ``dynq eval``: llama.cpp's compact log-prob format, chunking, errors,
and a small end-to-end run on SmolLM2."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from dynq.cli import eval as eval_cli
from dynq.engine.model import UnsupportedArchitectureError
from dynq.errors import DynqError
from dynq.evaluate import (
    EvalError,
    LogitsBase,
    decode_logprobs,
    encode_logprobs,
    evaluate,
    make_chunks,
    read_text,
)
from tests.engine.conftest import DATA

TEXT = DATA / "texts" / "textwrap.py.txt"
KEYS = {"ppl", "mean_kld", "median_kld", "p90_kld", "p99_kld", "max_kld", "top1_agreement"}


def test_logprob_encoding_roundtrip():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1001, generator=g) * 4
    rows = encode_logprobs(logits)
    assert rows.shape == (5, 2 * 501 + 4)
    lp = decode_logprobs(rows, 1001)
    exact = torch.log_softmax(logits.double(), -1)
    scale = np.ascontiguousarray(rows[:, :4]).view(np.float32)[:, 0]
    top = exact > exact.max(-1, keepdim=True).values - 16
    err = (lp - exact).abs().where(top, torch.zeros_like(lp)).amax(-1)
    assert (err.numpy() <= scale * 0.51 + 1e-5).all()


def test_chunks_bos_and_short_text():
    toks = list(range(100, 100 + 70))
    c = make_chunks(toks, 32, None, bos_id=1, add_bos=True)
    assert c.shape == (2, 32)
    assert c[0, 0] == 1 and c[1, 0] == 1 and c[1, 1] == 100 + 33
    c = make_chunks(toks, 32, 1, bos_id=1, add_bos=False)
    assert c.shape == (1, 32) and c[0, 0] == 100
    with pytest.raises(EvalError, match="text too short"):
        make_chunks(toks, 64, None, 1, True)


def test_read_text_drops_one_newline(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"a\\n b\n\n")
    assert read_text(p) == "a\\n b\n"


@pytest.fixture(scope="module")
def smol_eval(smollm2_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("eval") / "base.kld"
    text = read_text(TEXT)
    res = evaluate(smollm2_path, [smollm2_path], text, ctx=32, chunks=2, base_path=base)
    return res, base


def test_self_evaluation_is_zero(smol_eval):
    (r,), base = smol_eval
    assert set(KEYS) <= set(r.to_json())
    assert r.top1_agreement == 1.0
    # only the uint16 encoding of the reference (steps of 16/65535 nats) separates them
    assert abs(r.mean_kld) < 2e-5 and r.max_kld < 2e-4
    assert r.ppl == pytest.approx(r.reference_ppl, rel=1e-4)
    assert r.n_tokens == 2 * 15 and len(r.chunk_ppl) == 2
    b = LogitsBase.read(base)
    assert (b.n_ctx, b.n_chunk, b.n_vocab) == (32, 2, 49152)


def _cli(argv):
    p = argparse.ArgumentParser()
    eval_cli.register(p.add_subparsers())
    a = p.parse_args(["eval", *argv])
    return a.func(a)


def test_cli_json(smollm2_path, smol_eval, capsys):
    _, base = smol_eval
    rc = _cli(
        [str(smollm2_path), str(smollm2_path), "--text", str(TEXT), "--ctx", "32",
         "--chunks", "2", "--format", "json", "-q", "--base", str(base)]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out["candidates"][0])


def test_cli_errors(smollm2_path, gemma3_path, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("def f():\n    return 1\n")
    with pytest.raises(DynqError, match="text too short"):
        _cli([str(smollm2_path), str(smollm2_path), "--text", str(short), "--ctx", "64", "-q"])
    with pytest.raises(DynqError, match="not the same model"):
        _cli([str(smollm2_path), str(gemma3_path), "--text", str(TEXT), "--ctx", "32", "-q"])


def test_unsupported_architecture(tmp_path):
    import gguf

    p = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(p), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitectureError, match=r"supported: gemma3, llama"):
        evaluate(p, [p], list(range(64)), ctx=32)
