"""A tiny registry on disk: the tiny llama GGUF, its inventory, and a canonical recipe."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from dynq.gguf_io import inventory_from_gguf
from dynq.recipe import dump_recipe, parse_recipe
from tests import tiny_model

RECIPE = """\
schema_version = 1
name = "tiny"
version = "1.0.0"
description = "tiny llama for the TUI tests"

[model]
arch = "llama"
source = "tiny-f32.gguf"
inventory = "tiny.json"

[[rules]]
match = "token_embd.weight"
type = "q8_0"
note = "the embedding"

[targets.Q4_0]
extends = "llama.cpp:Q4_0"

[targets.mix]
base = "q4_1"
[[targets.mix.rules]]
match = "blk.*.attn_v.weight"
type = "q8_0"
note = "attn_v is small"
[[targets.mix.rules]]
match = "blk.*.ffn_down.weight"
layers = "1"
type = "q5_0"
"""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests (Textual's Pilot) in a fresh event loop, without a plugin."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-src")
    src = tiny_model.write(d / "tiny-f32.gguf")
    inventory_from_gguf(src).save(d / "tiny.json")
    return d


@pytest.fixture
def workdir(tmp_path: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current folder, with registry/tiny.toml and an empty build/."""
    reg = tmp_path / "registry"
    reg.mkdir()
    for name in ("tiny-f32.gguf", "tiny.json"):
        (reg / name).symlink_to(tiny_source / name)
    path = reg / "tiny.toml"
    path.write_text(dump_recipe(parse_recipe(RECIPE, path), path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def recipe_path(workdir: Path) -> Path:
    return workdir / "registry" / "tiny.toml"
