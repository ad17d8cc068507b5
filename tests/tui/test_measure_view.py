"""The measured-sensitivity heat map and tuning to a budget (``M`` on the recipe screen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Static

from dynq import stock
from dynq.inventory import load_inventory
from dynq.recipe import load_recipe
from tui.app import DynqApp
from tui.measured import short
from tui.screens.measure import BudgetScreen, MeasureScreen, TuneDiffScreen
from tui.screens.recipe import RecipeScreen

SIZE = (100, 30)

# predicted KLD increase per type, times a per-kind factor, times (layer + 1)
TYPE_COST = {"Q4_0": 1e-3, "Q5_0": 3e-4, "Q8_0": 1e-5}
KIND_FACTOR = {"attn_v": 4.0, "ffn_down": 2.0}


def cost(kind: str, layer: int | None, qtype: str) -> float:
    return TYPE_COST[qtype] * KIND_FACTOR.get(kind, 1.0) * ((layer or 0) + 1)


def write_measurement(recipe_path: Path) -> Path:
    """A synthetic ``dynq measure`` output with known costs for every quantizable tensor."""
    inv = load_inventory(recipe_path.parent / "tiny.json")
    groups = []
    for t in inv.tensors:
        if len(t.shape) < 2 or not stock.is_quantizable(t, "llama"):
            continue
        kind = t.kind.removesuffix(".weight")
        groups.append(
            {
                "name": t.name.removesuffix(".weight"),
                "kind": t.kind,
                "layer": t.layer,
                "tensors": [t.name],
                "costs": {q: cost(kind, t.layer, q) for q in TYPE_COST},
            }
        )
    data = {
        "format": 1,
        "recipe": "tiny",
        "key": "synthetic",
        "method": "synthetic costs for the TUI tests",
        "faithfulness": {"pairs": 12, "spearman": 0.875},
        "groups": groups,
    }
    path = recipe_path.parent / "measurements" / "tiny.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture
def measurement(recipe_path: Path) -> Path:
    return write_measurement(recipe_path)


def _app(recipe: Path, target: str = "mix") -> DynqApp:
    return DynqApp(Path("registry"), recipe, target, Path("build"))


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def _open_heat(pilot) -> MeasureScreen:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(pilot.app.screen, RecipeScreen)
    await pilot.press("M")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, MeasureScreen)
    return screen


async def _tune(pilot, screen: MeasureScreen, mix: str = "llama.cpp:Q4_0") -> TuneDiffScreen:
    await pilot.press("t")
    await pilot.pause()
    budget = pilot.app.screen
    assert isinstance(budget, BudgetScreen)
    ol = budget.query_one("#mixes", OptionList)
    ol.highlighted = ol.get_option_index(mix.removeprefix("llama.cpp:"))
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    diff = pilot.app.screen
    assert isinstance(diff, TuneDiffScreen), _text(screen, "#heat-status")
    return diff


async def test_heat_map_shows_costs_legend_and_faithfulness(measurement: Path, recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_heat(pilot)
        hm = screen.heat
        assert hm is not None
        assert hm.layers == [0, 1, None]
        # mix: attn_v is q8_0 in every layer, ffn_down q5_0 in layer 1
        v1 = hm.cells[("attn_v", 1)]
        assert (v1.planned, v1.costed, v1.cost) == ("Q8_0", "Q8_0", cost("attn_v", 1, "Q8_0"))
        d1 = hm.cells[("ffn_down", 1)]
        assert (d1.costed, d1.cost) == ("Q5_0", cost("ffn_down", 1, "Q5_0"))
        # q4_1 (the base) was not measured: the cheapest measured type with at least its bits
        q0 = hm.cells[("attn_q", 0)]
        assert (q0.planned, q0.costed) == ("Q4_1", "Q5_0")
        grid = _text(screen, "#heat-grid")
        row = next(line for line in grid.splitlines() if line.startswith("ffn_down"))
        assert short(cost("ffn_down", 1, "Q5_0")) in row  # 1e-3
        assert "attn_v" in grid and "token_embd" in grid
        info = _text(screen, "#heat-info")
        assert "Spearman 0.875" in info and "over 12 pairs" in info
        legend = _text(screen, "#heat-legend")
        assert "log scale" in legend and "–" in legend
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen)


async def test_heat_map_without_measurement(recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_heat(pilot)
        assert screen.heat is None
        assert "run `dynq measure registry/tiny.toml`" in _text(screen, "#heat-info")
        await pilot.press("t")  # nothing to tune with
        await pilot.pause()
        assert app.screen is screen
        assert "dynq measure" in _text(screen, "#heat-status")


async def test_tune_shows_diff_and_y_writes(measurement: Path, recipe_path: Path):
    before = recipe_path.read_text()
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_heat(pilot)
        diff = await _tune(pilot, screen)
        shown = _text(diff, "#tune-diff")
        assert "target mix" in shown
        assert recipe_path.read_text() == before  # nothing written before the answer
        await pilot.press("y")
        await pilot.pause()
        assert app.screen is screen
        assert "✓ tuned mix" in _text(screen, "#heat-status")
        after = recipe_path.read_text()
        assert after != before
        loaded = load_recipe(recipe_path)
        target = loaded.recipe.targets["mix"]
        assert target.rules and "dynq tune:" in (target.note or "")
        # the app works on the file as written now
        recipe = app.screen_stack[-2]
        assert isinstance(recipe, RecipeScreen)
        assert recipe.editor.saved.text == after and not recipe.editor.dirty
        assert screen.heat is not None


@pytest.mark.parametrize("key", ["n", "escape"])
async def test_tune_cancel_leaves_file(measurement: Path, recipe_path: Path, key: str):
    before = recipe_path.read_text()
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_heat(pilot)
        await _tune(pilot, screen)
        await pilot.press(key)
        await pilot.pause()
        assert app.screen is screen
        assert "unchanged" in _text(screen, "#heat-status")
    assert recipe_path.read_text() == before


async def test_tune_to_a_size(measurement: Path, recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_heat(pilot)
        await pilot.press("t")
        await pilot.pause()
        budget = app.screen
        assert isinstance(budget, BudgetScreen)
        inp = budget.query_one("#size", Input)
        inp.focus()
        inp.value = "lots"
        await pilot.press("enter")
        await pilot.pause()
        assert "expected bytes" in _text(budget, "#budget-error")
        inp.value = "10MB"
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, TuneDiffScreen), _text(screen, "#heat-status")


def test_heat_map_snapshot(measurement: Path, snap_compare):
    async def run(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("M")
        await pilot.pause()

    app = DynqApp(Path("registry"), Path("registry") / "tiny.toml", "mix", Path("build"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run)
