"""Pilot tests of the template check panel (`T` on the recipe screen)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

import tui.screens.recipe as recipe_screen
from tests.tui.conftest import PLAIN_TEMPLATE, SPLIT_TEMPLATE
from tui.app import DynqApp
from tui.screens.recipe import RecipeScreen
from tui.screens.registry import RegistryScreen
from tui.screens.template import TemplateScreen
from tui.widgets.key_footer import KeyFooter

SIZE = (100, 30)

# where dynq template check puts the finding: the `.split(` on line 3
SPLIT_LINE = 3
SPLIT_COL = SPLIT_TEMPLATE.splitlines()[SPLIT_LINE - 1].index(".split(") + 1


def _app(recipe: Path | None = None) -> DynqApp:
    return DynqApp(Path("registry"), recipe, "mix", Path("build"))


async def _settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _open_panel(pilot) -> TemplateScreen:
    await pilot.press("T")
    await _settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, TemplateScreen)
    return screen


def _footer(app: DynqApp) -> str:
    return app.screen.query_one(KeyFooter).render().plain


def _status(app: DynqApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def test_template_finding_shown_with_line_column_engine_and_rewrite(template_recipe):
    app = _app(template_recipe(SPLIT_TEMPLATE))
    async with app.run_test(size=SIZE) as pilot:
        panel = await _open_panel(pilot)
        assert panel.headline.startswith("✗ template FAILED: 1 error, 0 warnings")
        assert "engines jinja, minja" in panel.headline
        assert "registry/chat.jinja" in panel.plain
        assert f"error · {SPLIT_LINE}:{SPLIT_COL} · minja · method-args: " in panel.plain
        assert "method .split() takes 1 positional argument(s), given 2" in panel.plain
        assert "(suggest: `s.split(sep, 1)[1]` → `s.split(sep)[1:] | join(sep)`" in panel.plain
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen)
        # with something to report, the key is in the footer and the status line says so
        assert "T Template" in _footer(app)
        assert "chat template: 1 error, 0 warnings" in _status(app)


async def test_clean_template_says_ok_and_stays_out_of_the_footer(template_recipe):
    app = _app(template_recipe(PLAIN_TEMPLATE))
    async with app.run_test(size=SIZE) as pilot:
        panel = await _open_panel(pilot)
        assert panel.headline == "✓ template OK: no findings (18 renders; engines jinja, minja)"
        assert panel.plain == "registry/chat.jinja\nno findings"
        await pilot.press("T")  # T closes it again
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen)
        assert "Template" not in _footer(app)
        assert "chat template" not in _status(app)


async def test_source_gguf_template_checked_without_replacement(recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        panel = await _open_panel(pilot)
        assert panel.headline.startswith("✓ template OK")
        assert panel.plain.splitlines()[0] == "tiny-f32.gguf"


async def test_nothing_to_check_without_source_or_replacement(recipe_path: Path):
    (recipe_path.parent / "tiny-f32.gguf").unlink()  # the inventory is enough to plan
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        panel = await _open_panel(pilot)
        assert panel.headline.startswith(
            "nothing to check: model.source tiny-f32.gguf is not on this machine and the "
            "recipe has no model.chat_template"
        )
        assert panel.plain == ""


async def test_check_errors_are_one_line_never_a_crash(template_recipe, monkeypatch):
    app = _app(template_recipe(PLAIN_TEMPLATE, sha256="0" * 64))
    async with app.run_test(size=SIZE) as pilot:
        panel = await _open_panel(pilot)
        assert panel.headline.startswith("template check failed: ")
        assert "registry/chat.jinja: sha256 mismatch" in panel.headline
        assert "\n" not in panel.headline

        def boom(*args, **kwargs):
            raise RuntimeError("boom\n  in the check")

        monkeypatch.setattr("dynq.templates.check_recipe", boom)
        await pilot.press("r")
        await _settle(pilot)
        assert panel.headline == "template check failed: RuntimeError: boom in the check"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen) and app.is_running
        assert "T Template" in _footer(app)


async def test_check_runs_once_per_recipe_and_again_on_r(template_recipe, monkeypatch):
    calls: list[str] = []
    real = recipe_screen.run_check

    def counting(loaded):
        calls.append(loaded.sha256)
        return real(loaded)

    monkeypatch.setattr(recipe_screen, "run_check", counting)
    path = template_recipe(SPLIT_TEMPLATE)
    app = _app()  # the registry first: open the recipe from it twice
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause(0.5)  # the check starts by itself once the recipe is shown
        await _settle(pilot)
        assert (
            isinstance(app.screen, RecipeScreen)
            and app.screen.editor.path.resolve() == path.resolve()
        )
        assert len(calls) == 1
        panel = await _open_panel(pilot)
        assert "method-args" in panel.plain and len(calls) == 1  # cached
        await pilot.press("escape", "escape")  # close the panel, back to the registry
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)
        await pilot.press("enter")
        await pilot.pause(0.5)
        await _settle(pilot)
        assert "T Template" in _footer(app) and len(calls) == 1  # the same recipe: cached
        panel = await _open_panel(pilot)
        await pilot.press("r")  # re-check on demand
        await _settle(pilot)
        assert len(calls) == 2 and "method-args" in panel.plain
