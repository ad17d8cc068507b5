"""Recipe format v1: loading, located errors, canonical dump, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynq.errors import RecipeError
from dynq.recipe import (
    dump_recipe,
    format_layers,
    json_schema,
    load_recipe,
    parse_layers,
    save_recipe,
)
from tests.conftest import MINIMAL, REGISTRY, ROOT


def test_minimal_recipe_loads(write_recipe):
    loaded = load_recipe(write_recipe(MINIMAL))
    assert loaded.recipe.targets["Q4_K_M"].mix == "Q4_K_M"


def test_canonical_roundtrip_is_byte_identical(write_recipe, recipe_dir):
    p = write_recipe(MINIMAL)
    canonical = dump_recipe(load_recipe(p).recipe, p)
    p.write_text(canonical)
    assert dump_recipe(load_recipe(p).recipe, p) == canonical


@pytest.mark.parametrize("path", sorted(REGISTRY.glob("*.toml")), ids=lambda p: p.stem)
def test_registry_is_canonical(path: Path):
    loaded = load_recipe(path)
    assert dump_recipe(loaded.recipe, path) == loaded.text


def test_save_is_atomic_and_revalidates(write_recipe, recipe_dir):
    p = write_recipe(MINIMAL)
    loaded = load_recipe(p)
    save_recipe(loaded.recipe, p)
    assert load_recipe(p).recipe == loaded.recipe
    assert [f.name for f in recipe_dir.iterdir() if f.name.startswith(".")] == []


def _error(write_recipe, text: str) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(text))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_malformed_toml_names_line(write_recipe):
    msg = _error(write_recipe, MINIMAL.replace('version = "1.0.0"', "version = 1.0.0.0"))
    assert "tiny.toml:3: malformed TOML" in msg


def test_unknown_key_did_you_mean(write_recipe):
    msg = _error(
        write_recipe, MINIMAL.replace("[model]\n", "[model]\ninventroy_x = 1\nsorce = 'x'\n")
    )
    assert "tiny.toml:7: model.inventroy_x: unknown key" in msg


def test_misspelt_key_suggests(write_recipe):
    msg = _error(
        write_recipe, MINIMAL.replace('arch = "llama"', 'arch = "llama"\nsource_sha = "x"')
    )
    assert "model.source_sha: unknown key 'source_sha' (did you mean 'source_sha256'?)" in msg


def test_unknown_type_did_you_mean(write_recipe):
    text = MINIMAL + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.attn_v.weight"\ntype = "q4_kk"\n'
    msg = _error(write_recipe, text)
    assert (
        ":14: targets.Q4_K_M.rules[0].type: unknown GGML type 'q4_kk' (did you mean 'q4_k'?)" in msg
    )


def test_unknown_mix_did_you_mean(write_recipe):
    msg = _error(write_recipe, MINIMAL.replace("llama.cpp:Q4_K_M", "llama.cpp:Q4_KM"))
    assert "targets.Q4_K_M.extends: unknown llama.cpp mix 'Q4_KM' (did you mean 'Q4_K_M'?)" in msg


def test_bad_regex(write_recipe):
    text = MINIMAL + '[[targets.Q4_K_M.rules]]\nmatch = "re:blk\\\\.(\\\\d+"\ntype = "q8_0"\n'
    msg = _error(write_recipe, text)
    assert "targets.Q4_K_M.rules[0].match: bad regular expression" in msg


def test_bad_glob(write_recipe):
    text = MINIMAL + '[[targets.Q4_K_M.rules]]\nmatch = "blk.[0-3.ffn_down.weight"\ntype = "q8_0"\n'
    assert "bad glob" in _error(write_recipe, text)


def test_bad_layer_range(write_recipe):
    text = (
        MINIMAL
        + '[[targets.Q4_K_M.rules]]\nmatch = "blk.*.ffn_down.weight"\nlayers = "5-2"\ntype = "q8_0"\n'
    )
    assert "targets.Q4_K_M.rules[0].layers: layer range '5-2' runs backwards" in _error(
        write_recipe, text
    )


def test_duplicate_target_same_table(write_recipe):
    msg = _error(write_recipe, MINIMAL + '\n[targets.Q4_K_M]\nextends = "llama.cpp:Q2_K"\n')
    assert "malformed TOML" in msg


def test_duplicate_target_case(write_recipe):
    msg = _error(write_recipe, MINIMAL + '\n[targets.q4_k_m]\nextends = "llama.cpp:Q2_K"\n')
    assert "duplicate target 'q4_k_m'" in msg


def test_newer_schema_version(write_recipe):
    msg = _error(write_recipe, MINIMAL.replace("schema_version = 1", "schema_version = 9"))
    assert "tiny.toml:1: schema_version: 9 is newer than this dynq supports (1)" in msg


def test_name_must_equal_stem(write_recipe):
    assert "must equal the file stem 'other'" in _error(lambda t: write_recipe(t, "other"), MINIMAL)


def test_target_needs_one_base(write_recipe):
    msg = _error(
        write_recipe,
        MINIMAL.replace(
            'extends = "llama.cpp:Q4_K_M"', 'base = "q4_k"\nextends = "llama.cpp:Q4_K_M"'
        ),
    )
    assert "exactly one of 'base' or 'extends'" in msg


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_bad_semver(write_recipe):
    assert "version: must be a semantic version" in _error(
        write_recipe, MINIMAL.replace('"1.0.0"', '"1.0"')
    )


@given(st.sets(st.integers(0, 200), min_size=1))
def test_layers_roundtrip(layers):
    assert parse_layers(format_layers(layers)) == layers


def test_schema_is_current():
    assert (ROOT / "schemas" / "recipe.schema.json").read_text() == json_schema()
    schema = json.loads(json_schema())
    assert "targets" in schema["required"]
