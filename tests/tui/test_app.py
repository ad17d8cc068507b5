"""Pilot tests: every interaction of the TUI on the tiny registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Static

from dynq.recipe import load_recipe, parse_recipe
from tui.app import DynqApp
from tui.screens.build import BuildScreen
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.note import NoteEditor
from tui.screens.recipe import RecipeScreen
from tui.screens.registry import RegistryScreen
from tui.screens.save import SaveScreen
from tui.screens.target_picker import TargetPicker
from tui.screens.type_picker import TypePicker
from tui.widgets.layer_map import LayerMapView
from tui.widgets.tensor_table import TensorTable

SIZE = (100, 30)


def _app(recipe: Path | None = None, target: str | None = None) -> DynqApp:
    return DynqApp(Path("registry"), recipe, target, Path("build"))


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def _filter(pilot, text: str) -> None:
    await pilot.press("slash")
    inp = pilot.app.screen.query_one("#filter", Input)
    inp.value = text
    await pilot.press("enter")
    await pilot.pause()


async def _pick(pilot, qtype: str) -> None:
    """In the type picker, highlight ``qtype``."""
    ol = pilot.app.screen.query_one("#types", OptionList)
    ol.highlighted = ol.get_option_index(qtype)
    await pilot.pause()


async def test_registry_lists_recipes_and_opens_one(workdir: Path):
    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    (d / "tiny-mix.build.json").write_text(
        json.dumps({"file_size": 123456, "seconds": 1.5, "recipe_version": "1.0.0"})
    )
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, RegistryScreen)
        assert "tiny llama" in _text(app.screen, "#detail")
        assert "built 123.5 kB" in _text(app.screen, "#detail")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen)
        assert app.screen.target == "Q4_0"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)


async def test_edit_with_picker_save_writes_file(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, RecipeScreen)
        await _filter(pilot, "blk.0.ffn_up")
        table = screen.query_one("#table", TensorTable)
        assert table.names == ["blk.0.ffn_up.weight"]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TypePicker)
        await _pick(pilot, "q8_0")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert screen.editor.tensor("mix", "blk.0.ffn_up.weight").type.name == "Q8_0"
        assert "unsaved" in _text(screen, "#dirty")
        assert "Δ" not in _text(screen, "#summary") and "unsaved" in _text(screen, "#summary")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        diff = _text(app.screen, "#diff")
        assert "+ targets.mix.rules: blk.*.ffn_up.weight layers 0 → q8_0" in diff
        assert "blk.0.ffn_up.weight: q4_1 → q8_0" in diff
        await pilot.press("v")  # bump the version and save
        await pilot.pause()
        assert app.screen is screen
    loaded = load_recipe(recipe_path)
    assert loaded.recipe.version == "1.0.1"
    assert 'match = "blk.*.ffn_up.weight", layers = "0", type = "q8_0"' in loaded.text


async def test_picker_scope_and_errors_shown_in_place(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await _filter(pilot, "blk.0.ffn_gate")
        await pilot.press("enter")
        await pilot.pause()
        picker = app.screen
        await _pick(pilot, "q6_k")
        picker.query_one("#scope-layers").value = True
        picker.query_one("#layers", Input).value = "0-7"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is picker  # refused: the error is shown in the dialog
        assert "'0-7' is outside the model (layers 0-1)" in _text(picker, "#picker-error")
        assert not screen.editor.dirty
        picker.query_one("#layers", Input).value = "1"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        rule = screen.editor.recipe.targets["mix"].rules[-1]
        assert (rule.match, rule.layers, rule.type) == ("blk.*.ffn_gate.weight", "1", "q6_k")
        # every layer of the kind, with a note
        await pilot.press("enter")
        await pilot.pause()
        await _pick(pilot, "q5_0")
        app.screen.query_one("#scope-kind").value = True
        app.screen.query_one("#note", Input).value = "gate"
        await pilot.press("ctrl+s")
        await pilot.pause()
        rule = screen.editor.recipe.targets["mix"].rules[-1]
        assert (rule.layers, rule.type, rule.note) == (None, "q5_0", "gate")


async def test_step_marks_undo_redo(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        ed = screen.editor
        await _filter(pilot, "kind:ffn_up")
        await pilot.press("a")  # mark both shown tensors
        await pilot.press("plus")
        await pilot.pause()
        assert {ed.tensor("mix", f"blk.{i}.ffn_up.weight").type.name for i in (0, 1)} == {"Q5_K"}
        assert "step up" in _text(screen, "#status")
        await pilot.press("x", "minus", "minus")  # clear marks; the cursor's tensor only
        await pilot.pause()
        assert ed.tensor("mix", "blk.0.ffn_up.weight").type.name == "IQ4_XS"
        await pilot.press("u")
        await pilot.pause()
        assert ed.tensor("mix", "blk.0.ffn_up.weight").type.name == "Q4_K"
        assert "undone" in _text(screen, "#status")
        await pilot.press("u", "u")
        await pilot.pause()
        assert not ed.dirty
        await pilot.press("u")
        assert "nothing to undo" in _text(screen, "#status")
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert ed.tensor("mix", "blk.1.ffn_up.weight").type.name == "Q5_K"


async def test_unsaved_guard(recipe_path: Path):
    before = recipe_path.read_text()
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("plus")
        await pilot.pause()
        assert screen.editor.dirty
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("c")  # cancel: still editing
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and app.is_running
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("d")  # discard: back to the registry
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)
    assert recipe_path.read_text() == before


async def test_unsaved_guard_save_then_leave(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SaveScreen)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)
    assert "blk.*.output" not in recipe_path.read_text()
    assert "targets.mix" in recipe_path.read_text() or "[targets.mix]" in recipe_path.read_text()
    assert load_recipe(recipe_path).recipe.targets["mix"].rules[-1].layers is None


async def test_refused_save_keeps_file(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus")
        recipe_path.write_text(recipe_path.read_text() + "# edited elsewhere\n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveScreen)
        assert "not saved" in _text(app.screen, "#save-error")
        assert "changed on disk" in _text(app.screen, "#save-error")
    assert recipe_path.read_text().endswith("# edited elsewhere\n")


async def test_targets_sort_tabs_map_rules_note(recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert screen.target == "Q4_0"
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.target == "mix"
        table = screen.query_one("#table", TensorTable)
        await pilot.press("s", "s", "s")  # layer, kind, type
        await pilot.pause()
        assert screen.sort_column == "type"
        assert table.names[0].endswith("norm.weight") is False  # Q4_1 before F32
        await pilot.press("S")
        await pilot.pause()
        assert table.names[0].endswith("norm.weight")
        # layer map: the cursor's tensor, enter opens the picker for it
        await pilot.press("2")
        await pilot.pause()
        lm = screen.query_one("#layer-map", LayerMapView)
        assert lm.has_focus and lm.current is not None
        await pilot.press("down", "right")
        await pilot.pause()
        name = lm.current.name
        assert name.startswith("blk.1.")
        assert name in _text(screen, "#map-detail")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TypePicker)
        assert name in _text(app.screen, ".dialog-title")
        await pilot.press("escape")
        # rules tab: a note on the rule under the cursor, then delete it
        await pilot.press("3")
        await pilot.pause()
        await pilot.press("down", "down", "n")
        await pilot.pause()
        assert isinstance(app.screen, NoteEditor)
        app.screen.query_one("#note", Input).value = "why"
        await pilot.press("enter")
        await pilot.pause()
        assert screen.editor.recipe.targets["mix"].rules[0].note == "why"
        await pilot.press("d")
        await pilot.pause()
        assert len(screen.editor.recipe.targets["mix"].rules) == 1


async def test_help_screen(recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RecipeScreen)


async def test_compare_reads_eval_reports_and_opens_target(workdir: Path, recipe_path: Path):
    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    (d / "tiny-mix.eval.json").write_text(
        json.dumps({"mean_kld": 0.0123, "p99_kld": 0.2, "top1_agreement": 0.95, "ppl": 12.5})
    )
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("c")
        await pilot.pause()
        cmp = app.screen
        assert isinstance(cmp, CompareScreen)
        table = cmp.query_one("#compare-table")
        assert str(table.get_cell("mix", "mean_kld")) == "0.0123"
        assert str(table.get_cell("mix", "top1")) == "95.0%"
        assert str(table.get_cell("Q4_0", "mean_kld")) == "—"
        assert [p.pareto for p in cmp.points] == [False, True]
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.screen is screen and screen.target == "mix"


async def test_build_with_tiny_model(workdir: Path, recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("plus")
        await pilot.press("b")  # unsaved edits: refused
        assert "save first" in _text(screen, "#status")
        await pilot.press("u", "b")
        await pilot.pause()
        build = app.screen
        assert isinstance(build, BuildScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert build.ok, _text(build, "#build-status")
        assert "built tiny-mix.gguf" in _text(build, "#build-status")
        out = workdir / "build" / "tiny"
        assert (out / "tiny-mix.gguf").exists() and (out / "tiny-mix.build.json").exists()
        await pilot.press("escape")
        await pilot.pause()
        # again: the output exists, so nothing starts until f (overwrite) is pressed
        await pilot.press("b")
        await pilot.pause()
        assert "exists" in _text(app.screen, "#build-status")
        assert not app.screen.running
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_build_cancel_leaves_nothing(workdir: Path, recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        plan = screen.editor.plan("mix")
        build = BuildScreen(
            screen.editor.saved,
            "mix",
            workdir / "build" / "tiny",
            plan.tensor_bytes,
            len(plan.tensors),
        )
        build.cancel_event.set()  # as if escape was pressed before the first tensor
        await app.push_screen(build)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "cancelled" in _text(build, "#build-status")
        assert not build.ok
        out = workdir / "build" / "tiny"
        assert not out.exists() or list(out.iterdir()) == []
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_crash_keeps_file_and_unsaved_edits(recipe_path: Path, monkeypatch):
    before = recipe_path.read_text()

    def boom(self) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(RecipeScreen, "action_undo", boom)
    app = _app(recipe_path, "mix")
    with pytest.raises(RuntimeError, match="boom"):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("plus")
            await pilot.pause()
            await pilot.press("u")  # a bug in a handler
            await pilot.pause()
    assert recipe_path.read_text() == before
    unsaved = recipe_path.with_name("tiny.toml.unsaved")
    assert app.recovered == [unsaved]
    assert "blk.*.token_embd" not in unsaved.read_text()
    assert load_recipe(recipe_path).recipe != parse_recipe(unsaved.read_text(), recipe_path)


async def test_importance_column_from_imatrix(workdir: Path, recipe_path: Path):
    import numpy as np

    from dynq.imatrix_file import Imatrix, save_imatrix

    sums = {"blk.0.ffn_down.weight": np.full((1, 512), 8.0, np.float32)}
    counts = {"blk.0.ffn_down.weight": np.array([4])}
    out = workdir / "build" / "tiny"
    out.mkdir(parents=True)
    save_imatrix(out / "tiny.imatrix.gguf", Imatrix(sums, counts, ["cal.txt"], 4, 16))
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#table", TensorTable)
        assert "imp" in [k for k, _ in table.columns]
        assert app.screen.importance == {"blk.0.ffn_down.weight": 2.0}
        i = 1 + [k for k, _ in table.columns].index("imp")
        assert table._cells["blk.0.ffn_down.weight"][i][0] == "2"
        assert table._cells["blk.0.ffn_up.weight"][i][0] == "—"


async def test_no_importance_column_without_imatrix(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE):
        table = app.screen.query_one("#table", TensorTable)
        assert "imp" not in [k for k, _ in table.columns]


async def test_mouse_header_sort_and_row_click(recipe_path: Path):
    app = _app(recipe_path, "mix")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#table", TensorTable)
        x = 2 + table.widths[1] + 1  # the "type" header
        await pilot.click("#table", offset=(x, 0))
        await pilot.pause()
        assert screen.sort_column == "type"
        await pilot.click("#table", offset=(3, 3))
        await pilot.pause()
        assert table.cursor == 2
        await pilot.click("#table", offset=(3, 3), times=2)  # double click: the type picker
        await pilot.pause()
        assert isinstance(app.screen, TypePicker)


async def test_target_picker_key(recipe_path: Path):
    app = _app(recipe_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TargetPicker)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.screen is screen and screen.target == "mix"
        await pilot.click("#target")
        await pilot.pause()
        assert isinstance(app.screen, TargetPicker)
        await pilot.press("escape")
        await pilot.pause()
        assert screen.target == "mix"


async def test_recipe_that_does_not_plan_shows_its_error(workdir: Path, recipe_path: Path):
    bad = recipe_path.with_name("bad.toml")
    bad.write_text(
        recipe_path.read_text()
        .replace('name = "tiny"', 'name = "bad"')
        .replace('match = "blk.*.attn_v.weight"', 'match = "blk.*.atn_v.weight"')
    )
    app = _app(bad, "mix")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)
        assert any(
            "matches no tensor" in n.message and "did you mean 'blk.*.attn_v.weight'" in n.message
            for n in app._notifications
        )


def test_cli_command(dynq):
    r = dynq("tui", "--help")
    assert r.code == 0 and "RECIPE" in r.out and "--build-dir" in r.out
    assert "tui" in dynq("--help").out


def test_stale_build_marked(workdir: Path, recipe_path: Path):
    from tui.model import scan_registry

    d = workdir / "build" / "tiny"
    d.mkdir(parents=True)
    (d / "tiny-mix.build.json").write_text(
        json.dumps({"file_size": 1, "seconds": 1, "recipe_version": "1.0.0", "recipe_sha256": "0"})
    )
    (entry,) = scan_registry(workdir / "registry", workdir / "build")
    assert entry.builds[0].recipe_sha256 == "0" != entry.loaded.sha256
