"""``dynq measure``: per (tensor, type) costs, exact probes, faithfulness, cache and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynq.measure import MeasureError, _interp_log, measure, parse_types
from dynq.recipe import load_recipe

from .conftest import calibration_recipe


@pytest.fixture
def recipe(smollm2_path, tmp_path) -> Path:
    return calibration_recipe(tmp_path, smollm2_path, name="m", base="q4_0")


def test_measure_costs_probes_and_cache(dynq, recipe, tmp_path):
    r = dynq(
        "measure", recipe, "--types", "Q8_0,Q6_K", "--probe-chunks", "1", "--sample", "6",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert r.code == 0, r.err
    path = tmp_path / "measurements" / "m.json"
    assert str(path) in r.out and "Spearman" in r.out
    res = json.loads(path.read_text())
    assert res["format"] == 1 and res["recipe"] == "m"
    groups = {g["name"]: g for g in res["groups"]}
    assert len(groups) == 30 * 7 + 1  # every layer matrix and the (tied) embedding
    # 576-wide rows: Q6_K falls back to Q8_0, as in llama.cpp; ffn_down (1536) takes Q6_K
    assert set(groups["blk.0.attn_q"]["costs"]) == {"Q8_0"}
    assert set(groups["blk.0.ffn_down"]["costs"]) == {"Q8_0", "Q6_K"}
    assert groups["blk.5.ffn_down"]["kind"] == "ffn_down" and groups["blk.5.ffn_down"]["layer"] == 5
    for g in res["groups"]:
        c = g["costs"]
        assert c["Q8_0"] >= 0  # 0 for the embedding: the source stores it as Q8_0
        if "Q6_K" in c:  # more bits never cost more
            assert c["Q8_0"] < c["Q6_K"], g  # 0: the source embedding is Q8_0
    f = res["faithfulness"]
    assert f["pairs"] == 6 and len(f["sample"]) == 6
    assert all(s["exact"] > 0 for s in f["sample"])
    # up to date: read back, not measured again — the same settings taken from the recipe's
    # [measure] table instead of the flags
    text = recipe.read_text()
    recipe.write_text(
        text + '\n[measure]\ntypes = ["Q8_0", "Q6_K"]\nprobe_chunks = 1\nsample = 6\n'
    )
    r = dynq("measure", recipe, "--out", tmp_path / "out")
    assert r.code == 0 and "up to date" in r.err, r.err
    recipe.write_text(text + '\n[measure]\ntypes = ["default", "Q9_K"]\n')
    r = dynq("measure", recipe, "--out", tmp_path / "out")
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert str(recipe) in r.err and "measure.types" in r.err and "Q9_K" in r.err, r.err
    assert not (tmp_path / "measurements" / "m.partial.json").exists()


def test_resume_from_partial(recipe, tmp_path):
    loaded = load_recipe(recipe)
    calls = []

    def stop_after_three(msg: str) -> None:
        calls.append(msg)
        if msg.startswith("measure: errors 3/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure(loaded, types=("Q8_0",), probe_chunks=1, sample=0, out=tmp_path / "o",
                say=stop_after_three)  # fmt: skip
    partial = tmp_path / "measurements" / "m.partial.json"
    assert len(json.loads(partial.read_text())["errors"]) == 3
    msgs: list[str] = []
    res, _ = measure(loaded, types=("Q8_0",), probe_chunks=1, sample=0, out=tmp_path / "o",
                     say=msgs.append)  # fmt: skip
    assert any("resuming (3 tensors done)" in m for m in msgs)
    assert not any(m.startswith("measure: errors 1/") for m in msgs)
    assert len(res["groups"]) == 211


def test_types_and_interpolation():
    assert parse_types("q4_k,lowbit")[:2] == ("Q4_K", "IQ1_S")
    with pytest.raises(MeasureError, match="--types"):
        parse_types("q4_kk")
    pts = {0: 1.0, 10: 100.0}
    assert _interp_log(pts, 5) == pytest.approx(10.0)
    assert _interp_log(pts, -3) == 1.0 and _interp_log(pts, 12) == 100.0
