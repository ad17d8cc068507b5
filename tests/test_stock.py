"""dynq.stock against llama.cpp: llama-quantize's own per-tensor choices (tests/data/stock/)."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import pytest

from dynq import qtypes
from dynq.errors import QuantTypeError, RecipeError
from dynq.inventory import Inventory, TensorInfo, load_inventory
from dynq.stock import MIXES, fallback, is_quantizable, stock_types

DATA = Path(__file__).parent / "data" / "stock"


def _expected_cases() -> list[tuple[str, str, str]]:
    """(model, variant, mix) for every mix recorded in every expected_*.json."""
    cases = []
    for path in sorted(DATA.glob("*.expected.json")):
        data = json.loads(path.read_text())
        for variant, mixes in sorted(data["runs"].items()):
            for mix in sorted(mixes):
                cases.append((data["model"], variant, mix))
    return cases


@cache
def _load_inventory(name: str) -> Inventory:
    path = DATA / name
    if path.suffix == ".gz":
        return Inventory.model_validate_json(gzip.decompress(path.read_bytes()))
    return load_inventory(path)


@cache
def _load_expected(model: str) -> dict:
    return json.loads((DATA / f"{model}.expected.json").read_text())


def _expand(inventory_names: list[str], compact: dict[str, str]) -> dict[str, str]:
    """Expected types from their compact form: ``kind`` -> type for every layer, or
    ``kind@a-b`` / ``kind@a`` for layer ranges, or a full tensor name."""
    out: dict[str, str] = {}
    for name in inventory_names:
        if name in compact:
            out[name] = compact[name]
            continue
        if not name.startswith("blk."):
            continue
        _, layer, kind = name.split(".", 2)
        i = int(layer)
        for key, t in compact.items():
            k, _, rng = key.partition("@")
            if k != kind:
                continue
            if not rng:
                out[name] = t
                break
            lo, _, hi = rng.partition("-")
            if int(lo) <= i <= int(hi or lo):
                out[name] = t
                break
    return out


def _describe(choice) -> str:
    """A StockChoice as the test data spells it: ``TYPE``, or ``TYPE<FROM`` after a fallback."""
    if choice.fallback_from is None:
        return choice.type.name
    return f"{choice.type.name}<{choice.fallback_from.name}"


@pytest.mark.parametrize(("model", "variant", "mix"), _expected_cases())
def test_stock_types_match_llama_quantize(model: str, variant: str, mix: str) -> None:
    data = _load_expected(model)
    inv = _load_inventory(data["inventory"])
    names = [t.name for t in inv.tensors]
    entry = data["runs"][variant][mix]
    if entry == "=no_imatrix":  # llama-quantize chose the same with and without an imatrix
        entry = data["runs"]["no_imatrix"][mix]
    imatrix = variant == "imatrix"
    if "error" in entry:  # llama-quantize refused the mix for this model
        with pytest.raises((QuantTypeError, RecipeError)):
            stock_types(mix, inv, imatrix=imatrix, hparams=data.get("hparams"))
        return
    expected = _expand(names, entry)
    assert set(expected) == set(names), "test data does not cover every tensor"
    got = stock_types(mix, inv, imatrix=imatrix, hparams=data.get("hparams"))
    wrong = {n: (_describe(got[n]), expected[n]) for n in names if _describe(got[n]) != expected[n]}
    assert not wrong, f"{len(wrong)} of {len(names)} differ (got, llama.cpp): {wrong}"
    for t in inv.tensors:  # llama.cpp copies a tensor whose type does not change
        assert got[t.name].quantize == (got[t.name].type.name != t.type)


def test_gemma3_270m_shipped_q4_k_m() -> None:
    """The Q4_K_M GGUF shipped for Gemma 3 270M is llama-quantize's own output."""
    inv = load_inventory(DATA / "gemma3-270m-q4_k_m.inventory.json")
    got = stock_types("Q4_K_M", inv)
    assert {n: c.type.name for n, c in got.items()} == {t.name: t.type for t in inv.tensors}
    assert not any(c.quantize for c in got.values())  # requantizing to itself: all copied
    assert got["blk.0.attn_q.weight"].fallback_from == qtypes.parse_type("Q4_K")
    assert got["output_norm.weight"].reason == "not quantized: 1-D"


def test_mix_names() -> None:
    for mix in ("Q2_K", "Q4_K_M", "IQ2_XXS", "IQ4_XS", "TQ1_0", "Q8_0"):
        assert mix in MIXES
    inv = load_inventory(DATA / "gemma3-270m-q4_k_m.inventory.json")
    assert stock_types("q4_k", inv) == stock_types("Q4_K_M", inv)
    with pytest.raises(RecipeError, match="did you mean 'Q4_K_M'"):
        stock_types("Q4_KM", inv)


@pytest.mark.parametrize(
    ("t", "n", "want"),
    [
        ("Q4_K", 4096, "Q4_K"),
        ("Q4_K", 640, "Q5_0"),
        ("Q5_K", 640, "Q5_1"),
        ("Q6_K", 576, "Q8_0"),
        ("Q2_K", 576, "Q4_0"),
        ("Q3_K", 576, "Q4_0"),
        ("IQ2_XXS", 576, "IQ4_NL"),
        ("IQ4_XS", 576, "IQ4_NL"),
        ("TQ2_0", 576, "Q4_0"),
        ("Q6_K", 100, "F16"),
        ("Q8_0", 100, "F16"),
        ("Q4_0", 48, "F16"),
        ("F16", 7, "F16"),
        ("BF16", 7, "BF16"),
    ],
)
def test_fallback(t: str, n: int, want: str) -> None:
    assert fallback(qtypes.parse_type(t), n).name == want


def test_fallback_undefined() -> None:
    with pytest.raises(QuantTypeError, match="no fallback"):
        fallback(qtypes.parse_type("Q1_0"), 576)


@pytest.mark.parametrize(
    ("name", "shape", "want"),
    [
        ("blk.0.attn_q.weight", (4096, 4096), True),
        ("blk.0.ffn_down_exps.weight", (2048, 7168, 256), True),
        ("blk.0.attn_norm.weight", (4096,), False),
        ("blk.0.ffn_gate_inp.weight", (7168, 256), False),
        ("blk.0.exp_probs_b.bias", (256,), False),
        ("position_embd.weight", (768, 1024), False),
        ("blk.0.attn_q.weight", (4096, 1, 1), False),  # ggml_n_dims ignores trailing 1s
        ("blk.0.ssm_conv1d.weight", (4, 1024), False),
        ("blk.0.attn_k_b.weight", (128, 512, 128), True),
        ("blk.0.some.bias", (64, 64), False),
        ("output.weight", (4096, 32000), True),
    ],
)
def test_is_quantizable(name: str, shape: tuple[int, ...], want: bool) -> None:
    assert is_quantizable(TensorInfo(name=name, shape=shape, type="F32"), "llama") is want


def test_is_quantizable_glm5_next() -> None:
    t = TensorInfo(name="blk.3.attn_k_b.weight", shape=(128, 512, 64), type="BF16")
    assert not is_quantizable(t, "glm5-next")


def _tiny(names_shapes: list[tuple[str, tuple[int, ...]]], arch: str = "llama") -> Inventory:
    return Inventory(
        arch=arch,
        origin="test",
        origin_kind="safetensors",
        n_layers=1,
        tensors=[TensorInfo(name=n, shape=s, type="BF16") for n, s in names_shapes],
    )


def test_hparams_when_tensors_cannot_tell() -> None:
    # no attn_q/attn_k to read n_head/n_head_kv from, but attn_v's choice in Q2_K depends on it
    inv = _tiny([("blk.0.attn_v.weight", (4096, 1024)), ("token_embd.weight", (4096, 1000))])
    with pytest.raises(RecipeError, match="n_head"):
        stock_types("Q2_K", inv)
    assert stock_types("Q4_0", inv)["blk.0.attn_v.weight"].type.name == "Q4_0"  # not needed
    got = stock_types("Q2_K", inv, hparams={"n_head": 32, "n_head_kv": 8})
    assert got["blk.0.attn_v.weight"].type.name == "Q4_K"  # n_gqa >= 4
    got = stock_types("Q2_K", inv, hparams={"n_gqa": 1})
    assert got["blk.0.attn_v.weight"].type.name == "Q3_K"
    with pytest.raises(RecipeError, match="unknown hparams"):
        stock_types("Q2_K", inv, hparams={"n_heads": 32})


def test_derived_hparams() -> None:
    inv = _tiny(
        [
            ("blk.0.attn_q.weight", (4096, 4096)),
            ("blk.0.attn_k.weight", (4096, 1024)),
            ("blk.0.attn_v.weight", (4096, 1024)),
        ]
    )
    assert stock_types("Q2_K", inv)["blk.0.attn_v.weight"].type.name == "Q4_K"  # 32/8 heads
    fused = _tiny([("blk.0.attn_qkv.weight", (3072, 9216))], arch="phi3")
    assert stock_types("Q2_K", fused)["blk.0.attn_qkv.weight"].type.name == "Q3_K"  # no GQA


def test_requires_imatrix() -> None:
    inv = _tiny(
        [
            ("token_embd.weight", (4096, 1000)),
            ("blk.0.attn_q.weight", (4096, 4096)),
            ("blk.0.attn_k.weight", (4096, 1024)),
        ]
    )
    got = stock_types("IQ2_XXS", inv)
    assert got["blk.0.attn_q.weight"].requires_imatrix
    assert not got["token_embd.weight"].requires_imatrix  # Q2_K, and embeddings never need one
    assert stock_types("Q2_K_S", inv)["blk.0.attn_q.weight"].requires_imatrix
    assert not stock_types("Q2_K", inv)["blk.0.attn_q.weight"].requires_imatrix
