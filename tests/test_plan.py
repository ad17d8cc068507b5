"""The resolver: rule order, fallbacks, errors, and exact file-size prediction."""

from __future__ import annotations

import pytest

from dynq import layout
from dynq.errors import RecipeError
from dynq.inventory import load_inventory
from dynq.plan import Resolver
from dynq.recipe import load_recipe
from tests.conftest import MINIMAL, REGISTRY

BASE = MINIMAL.replace('extends = "llama.cpp:Q4_K_M"', 'base = "q8_0"')


def _plan(write_recipe, text: str, target: str = "Q4_K_M"):
    return Resolver(load_recipe(write_recipe(text))).plan(target)


def test_base_target_types_and_f32_norms(write_recipe):
    plan = _plan(write_recipe, BASE)
    by = plan.by_name()
    assert by["blk.0.attn_q.weight"].type.name == "Q8_0"
    assert by["blk.0.attn_q.weight"].rule == "base"
    assert by["blk.0.attn_norm.weight"].type.name == "F32"
    assert by["blk.0.attn_norm.weight"].rule == "not quantized"


def test_later_rule_overrides_and_records_rule(write_recipe):
    text = (
        BASE
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.ffn_down.weight"\ntype = "q4_0"\n'
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.ffn_down.weight"\nlayers = "0-1"\n'
        + 'type = "q6_k"\nnote = "edges"\n'
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.attn_q.weight"\ntype = "q6_k"\n'
    )
    by = _plan(write_recipe, text).by_name()
    assert by["blk.5.ffn_down.weight"].type.name == "Q4_0"
    assert by["blk.5.ffn_down.weight"].rule == "targets.Q4_K_M.rules[0]"
    t = by["blk.0.ffn_down.weight"]  # 1536-wide rows: Q6_K fits
    assert (t.type.name, t.fallback_from, t.note) == ("Q6_K", None, "edges")
    # attn_q rows are 576 wide: Q6_K (256-blocks) does not fit and falls back like llama.cpp
    t = by["blk.0.attn_q.weight"]
    assert (t.type.name, t.fallback_from.name) == ("Q8_0", "Q6_K")


def test_shared_rules_apply_before_target_rules(write_recipe):
    text = (
        BASE.replace(
            "[targets.Q4_K_M]",
            '[[rules]]\nmatch = "re:blk\\\\.\\\\d+\\\\.attn_[kv]\\\\.weight"\ntype = "q5_0"\n\n'
            "[targets.Q4_K_M]",
        )
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.0.attn_k.weight"\ntype = "q4_1"\n'
    )
    by = _plan(write_recipe, text).by_name()
    assert by["blk.3.attn_v.weight"].type.name == "Q5_0"
    assert by["blk.3.attn_v.weight"].rule == "rules[0]"
    assert by["blk.0.attn_k.weight"].type.name == "Q4_1"


def _plan_error(write_recipe, text: str) -> str:
    with pytest.raises(RecipeError) as e:
        _plan(write_recipe, text)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_rule_matching_nothing_is_error_with_suggestion(write_recipe):
    text = BASE + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.atn_v.weight"\ntype = "q8_0"\n'
    msg = _plan_error(write_recipe, text)
    assert (
        "tiny.toml:13: targets.Q4_K_M.rules[0].match: 'blk.*.atn_v.weight' matches no tensor" in msg
    )
    assert "did you mean 'blk.*.attn_v.weight'?" in msg


def test_layer_range_outside_model(write_recipe):
    text = (
        BASE
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.attn_v.weight"\nlayers = "28-31"\ntype = "q8_0"\n'
    )
    msg = _plan_error(write_recipe, text)
    assert "targets.Q4_K_M.rules[0].layers: '28-31' is outside the model (layers 0-29)" in msg


def test_float_only_tensor_forced_to_quant_type(write_recipe):
    text = BASE + '[[targets.Q4_K_M.rules]]\nmatch = "blk.0.attn_norm.weight"\ntype = "q8_0"\n'
    msg = _plan_error(write_recipe, text)
    assert (
        "'blk.0.attn_norm.weight' is a float-only tensor (F32, shape [576]) and cannot take Q8_0"
        in msg
    )


def test_glob_over_mixed_tensors_skips_float_only(write_recipe):
    text = BASE + '[[targets.Q4_K_M.rules]]\nmatch = "blk.0.*"\ntype = "q4_0"\n'
    by = _plan(write_recipe, text).by_name()
    assert by["blk.0.attn_norm.weight"].type.name == "F32"
    assert by["blk.0.attn_q.weight"].type.name == "Q4_0"


def test_arch_mismatch(write_recipe):
    msg = _plan_error(write_recipe, BASE.replace('arch = "llama"', 'arch = "gemma3"'))
    assert "model.arch: 'gemma3' but the inventory is of a 'llama' model" in msg


def test_missing_inventory(write_recipe):
    msg = _plan_error(write_recipe, BASE.replace("smollm2-135m.json", "nope.json"))
    assert "tiny.toml:8: model.inventory: file not found" in msg


def test_unknown_target(write_recipe):
    with pytest.raises(RecipeError, match="no target 'Q4_K_N' \\(did you mean 'Q4_K_M'\\?\\)"):
        _plan(write_recipe, BASE, target="Q4_K_N")


def test_stock_q4_k_m_reproduces_shipped_gemma_file():
    """The Q4_K_M GGUF on PyPI was made by llama-quantize: our Plan must give its types."""
    loaded = load_recipe(REGISTRY / "gemma3-270m.toml")
    inv = load_inventory(REGISTRY / "inventories" / "gemma3-270m.json")
    target = next(
        n
        for n, t in loaded.recipe.targets.items()
        if t.extends == "llama.cpp:Q4_K_M" and not t.rules
    )
    plan = Resolver(loaded, inv).plan(target)
    shipped = {t.name: t.type for t in inv.tensors}
    assert {t.name: t.type.name for t in plan.tensors} == shipped


def test_size_prediction_matches_source_layout():
    """With the source's own metadata and types, the layout reproduces the file size exactly."""
    for name in ("smollm2-135m", "gemma3-270m"):
        inv = load_inventory(REGISTRY / "inventories" / f"{name}.json")
        size = layout.file_size(
            inv.metadata_bytes.values(),
            [(t.name, len(t.shape), t.nbytes) for t in inv.tensors],
            inv.alignment,
        )
        expected = {"smollm2-135m": 98_362_432, "gemma3-270m": 253_113_024}[name]
        assert size == expected


@pytest.mark.parametrize("path", sorted(REGISTRY.glob("*.toml")), ids=lambda p: p.stem)
def test_registry_plans(path):
    plans = Resolver(load_recipe(path)).plan_all()
    assert plans and all(p.file_size > p.tensor_bytes for p in plans)
