"""dynq.imatrix against llama-imatrix (``reference_imatrix.npz``, produced by
``tests/data/engine/make_reference_imatrix.py``) on two 128-token chunks of a stored text."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from dynq.cli import imatrix as imatrix_cli
from dynq.evaluate import read_text
from dynq.imatrix import collect_imatrix
from dynq.imatrix_file import Imatrix, load_imatrix, save_imatrix
from tests.engine.conftest import DATA, model_path

REF = np.load(DATA / "reference_imatrix.npz")
TEXT = DATA / "texts" / "textwrap.py.txt"


def ref_tensors(name: str, kind: str) -> dict[str, tuple[np.ndarray, int]]:
    out = {}
    prefix = f"{name}/{kind}/"
    for k in REF.files:
        if k.startswith(prefix) and k.endswith("/in_sum2"):
            t = k[len(prefix) : -len("/in_sum2")]
            out[t] = (REF[k].astype(np.float64), int(REF[f"{prefix}{t}/counts"]))
    return out


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def collected(request):
    name = request.param
    im = collect_imatrix(model_path(request, name), read_text(TEXT), ctx=128, chunks=2)
    return name, im


def rel_diffs(im: Imatrix, ref: dict[str, tuple[np.ndarray, int]]) -> dict[str, float]:
    out = {}
    for t, (sums, count) in ref.items():
        assert im.counts[t][0] == count
        out[t] = float(np.abs(im.sums[t][0] - sums).sum() / np.abs(sums).sum())
    return out


def test_matches_llama_imatrix_f32(collected):
    name, im = collected
    ref = ref_tensors(name, "f32")
    d = rel_diffs(im, ref)
    print(f"{name} vs llama-imatrix f32: max rel diff {max(d.values()):.2e}")
    assert max(d.values()) < 2e-3
    # the bar: every entry (one column's sum of squares) within 1 % of llama-imatrix's
    # (columns that never see a nonzero input are zero in both: rel diff 0)
    worst = max(
        (float(np.max(np.abs(im.sums[t][0] - s) / np.where(s == 0, 1.0, np.abs(s)))), t)
        for t, (s, _) in ref.items()
    )
    print(f"{name}: worst entry rel diff {worst[0]:.2e} ({worst[1]})")
    assert worst[0] < 0.01, worst


def test_close_to_llama_imatrix_quantized(collected):
    name, im = collected
    d = rel_diffs(im, ref_tensors(name, "quant"))
    v = np.array(list(d.values()))
    print(f"{name} vs llama-imatrix quantized: mean rel diff {v.mean():.2e}, max {v.max():.2e}")
    assert v.mean() < 0.01
    assert v.max() < 0.05


def test_gguf_roundtrip(collected, tmp_path):
    _, im = collected
    p = tmp_path / "im.gguf"
    save_imatrix(p, im)
    back = load_imatrix(p)
    assert back.chunk_count == 2 and back.chunk_size == 128
    assert set(back.sums) == set(im.sums)
    for t in im.sums:
        np.testing.assert_array_equal(back.counts[t], im.counts[t])
        np.testing.assert_allclose(back.sums[t], im.sums[t], rtol=1e-6)


def test_cli_writes_imatrix(smollm2_path, tmp_path):
    p = argparse.ArgumentParser()
    imatrix_cli.register(p.add_subparsers())
    out = tmp_path / "im.gguf"
    a = p.parse_args(
        ["imatrix", str(smollm2_path), "--text", str(TEXT), "-o", str(out),
         "--ctx", "32", "--chunks", "2", "-q"]
    )  # fmt: skip
    assert a.func(a) == 0
    im = load_imatrix(out)
    assert im.counts["blk.0.attn_q.weight"][0] == 64
    assert len(im.sums) == 30 * 7
