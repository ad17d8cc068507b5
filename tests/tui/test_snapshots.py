"""SVG snapshots of every screen at 80×24 (and the recipe screen at 160×40).

Update after an intended change: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import OptionList

from tests.tui.conftest import SPLIT_TEMPLATE
from tui.app import DynqApp

SMALL = (80, 24)


def _app(recipe: str | None = None, target: str | None = None) -> DynqApp:
    path = Path("registry") / f"{recipe}.toml" if recipe else None
    return DynqApp(Path("registry"), path, target, Path("build"))


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_registry(workdir: Path, snap_compare):
    assert snap_compare(_app(), terminal_size=SMALL)


def test_recipe_table(workdir: Path, snap_compare):
    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, run_before=_settle)


def test_recipe_wide_after_edit(workdir: Path, snap_compare):
    async def edit(pilot):
        await _settle(pilot)
        await pilot.press("down", "down", "plus")
        await pilot.pause()

    assert snap_compare(_app("tiny", "mix"), terminal_size=(160, 40), run_before=edit)


def test_layer_map(workdir: Path, snap_compare):
    assert snap_compare(
        _app("tiny", "mix"), terminal_size=SMALL, press=["2", "down", "right"], run_before=_settle
    )


def test_rules(workdir: Path, snap_compare):
    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, press=["3"], run_before=_settle)


def test_type_picker(workdir: Path, snap_compare):
    async def run(pilot):
        await _settle(pilot)
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        ol = pilot.app.screen.query_one("#types", OptionList)
        ol.highlighted = ol.get_option_index("q5_k")
        await pilot.pause()

    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, run_before=run)


def test_save_diff(workdir: Path, snap_compare):
    async def run(pilot):
        await _settle(pilot)
        await pilot.press("down", "down", "plus", "ctrl+s")
        await _settle(pilot)

    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, run_before=run)


def test_unsaved_guard(workdir: Path, snap_compare):
    async def run(pilot):
        await _settle(pilot)
        await pilot.press("plus", "escape")
        await pilot.pause()

    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, run_before=run)


def test_compare(workdir: Path, snap_compare):
    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    for target, size_kld in (("mix", 0.012), ("Q4_0", 0.03)):
        (d / f"tiny-{target}.eval.json").write_text(
            json.dumps({"mean_kld": size_kld, "p99_kld": 0.2, "top1_agreement": 0.9, "ppl": 20})
        )
    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, press=["c"], run_before=_settle)


def test_help(workdir: Path, snap_compare):
    assert snap_compare(_app("tiny"), terminal_size=SMALL, press=["question_mark"])


def test_build_exists(workdir: Path, snap_compare):
    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    (d / "tiny-mix.gguf").write_bytes(b"")
    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, press=["b"], run_before=_settle)


def test_template_findings(template_recipe, snap_compare):
    template_recipe(SPLIT_TEMPLATE)

    async def run(pilot):
        await pilot.press("T")
        await _settle(pilot)

    assert snap_compare(_app("tiny", "mix"), terminal_size=SMALL, run_before=run)
