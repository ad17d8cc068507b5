"""A tiny registry on disk: the tiny llama GGUF, its inventory, and a canonical recipe."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable
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

# a replacement chat template that llama.cpp's old minja engine refuses on line 3: its
# str.split() takes no maxsplit (dynq template check: error [minja] method-args)
SPLIT_TEMPLATE = """\
{% for m in messages %}
{%- if m['role'] == 'assistant' and '</think>' in m['content'] %}
{{- m['content'].split('</think>', 1)[1] }}
{%- else %}{{ m['role'] }}: {{ m['content'] }}
{% endif %}{% endfor %}"""

# the same without the problem
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


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


@pytest.fixture
def template_recipe(recipe_path: Path) -> Callable[..., Path]:
    """``make(template, sha256=None)``: give registry/tiny.toml a replacement chat template
    (``model.chat_template``, registry/chat.jinja, pinned to its sha256 unless one is given)."""

    def make(template: str, sha256: str | None = None) -> Path:
        (recipe_path.parent / "chat.jinja").write_text(template)
        sha = sha256 or hashlib.sha256(template.encode()).hexdigest()
        text = RECIPE.replace(
            'inventory = "tiny.json"\n',
            'inventory = "tiny.json"\n'
            f'chat_template = {{ path = "chat.jinja", sha256 = "{sha}" }}\n',
        )
        assert text != RECIPE
        recipe_path.write_text(dump_recipe(parse_recipe(text, recipe_path), recipe_path))
        return recipe_path

    return make
