"""The recipe screen: one target's Plan as a table and a layer map, the summary, and editing."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from dynq.errors import DynqError
from dynq.plan import Plan
from tui.editor import Editor, Scope
from tui.importance import find_imatrix, load_importance
from tui.messages import MapCellChosen, MapCursorMoved, TemplateChecked
from tui.model import (
    COLUMNS,
    FILTER_HELP,
    Filter,
    FilterError,
    parse_filter,
    short_kind,
    summarize,
)
from tui.template import TemplateResult, check_key, run_check
from tui.widgets.key_footer import KeyFooter
from tui.widgets.layer_map import LayerMapView
from tui.widgets.summary import SummaryPanel
from tui.widgets.tensor_table import HeaderClicked, RowChosen, TensorTable

NARROW = 110  # below this width the summary goes under the table

SORTABLE = ["name", "layer", "kind", "type", "bpw", "mb", "params", "rule", "imp"]


class RecipeScreen(Screen):
    """Edit one recipe. The Editor holds the state; this screen draws it and forwards keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign", "step(1)", "Up", key_display="+"),
        Binding("minus", "step(-1)", "Down", key_display="-"),
        Binding("space", "mark", "Mark", show=False),
        Binding("a", "mark_all", "Mark shown", show=False),
        Binding("x", "clear_marks", "Clear marks", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("t", "choose_target", "Target", show=False),
        Binding("right_square_bracket", "next_target(1)", "Next target", show=False),
        Binding("left_square_bracket", "next_target(-1)", "Previous target", show=False),
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse sort", show=False),
        Binding("1", "tab('tensors')", "Table", show=False),
        Binding("2", "tab('map')", "Map", show=False),
        Binding("3", "tab('rules')", "Rules", show=False),
        Binding("m", "toggle_map", "Map", show=False),
        Binding("n", "note", "Note", show=False),
        Binding("d", "delete_rule", "Delete rule", show=False),
        Binding("u,ctrl+z", "undo", "Undo"),
        Binding("ctrl+y,U", "redo", "Redo", show=False),
        Binding("ctrl+s", "save", "Save"),
        Binding("b", "build", "Build"),
        Binding("c", "compare", "Compare"),
        Binding("M", "measured", "Sensitivity", show=False),
        # the template check: in the footer while it has errors or warnings to show (the
        # first binding, hidden by check_action otherwise), always on the key (the second)
        Binding("T", "template('footer')", "Template"),
        Binding("T", "template", "Template", show=False),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(
        self,
        editor: Editor,
        target: str | None = None,
        build_root: Path = Path("build"),
    ) -> None:
        super().__init__()
        self.editor = editor
        self.target = target if target in editor.recipe.targets else editor.targets[0]
        self.build_root = build_root
        self.filter: Filter = Filter()
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.importance: dict[str, float] | None = None
        self._stale: set[str] = set()
        self.template: TemplateResult | None = None  # the last template check
        self._template_running = False

    # -- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        r = self.editor.recipe
        with Horizontal(id="titlebar"):
            yield Static(
                Text.assemble((r.name, "bold"), f" {r.version} · {r.model.arch} · "),
                id="recipe-title",
            )
            yield Static(self._target_label(), id="target")
            yield Static("", id="dirty")
        with Horizontal(id="body", classes="narrow" if self.app.size.width < NARROW else ""):
            with Vertical(id="main"):
                yield Input(placeholder=f"filter — {FILTER_HELP}", id="filter")
                with TabbedContent(id="tabs", initial="tensors"):
                    with TabPane("Tensors", id="tensors"):
                        yield TensorTable(id="table")
                    with TabPane("Layer map", id="map"):
                        yield Static("", id="map-detail")
                        with ScrollableContainer(id="layer-map-scroll"):
                            yield LayerMapView(id="layer-map")
                    with TabPane("Rules", id="rules"):
                        yield DataTable(id="rules-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="status")
            yield SummaryPanel(id="summary")
        yield KeyFooter()

    def _target_label(self) -> Text:
        return Text.assemble(("target ", "dim"), (f" {self.target} ▾ ", "bold reverse"))

    def on_mount(self) -> None:
        rt = self.query_one("#rules-table", DataTable)
        rt.add_column("rule", key="label")
        rt.add_column("match", key="match")
        rt.add_column("layers", key="layers")
        rt.add_column("type", key="type")
        rt.add_column("tensors", key="n")
        rt.add_column("note", key="note")
        self.redraw()
        self.query_one("#table", TensorTable).focus()
        if find_imatrix(self.editor.saved, self.build_root) is not None:
            self.load_importance()
        # after the first paint, so that it does not compete with it
        self.set_timer(0.2, self.prefetch_plans)
        self.set_timer(0.3, self._check_template_on_open)

    @work(thread=True, exclusive=True, group="prefetch")
    def prefetch_plans(self) -> None:
        """Plan the other targets in the background: switching targets is then instant."""
        try:
            self.editor.prefetch()
        except DynqError as e:
            self.app.call_from_thread(self.status, str(e), "bold red")

    @work(thread=True, exclusive=True, group="importance")
    def load_importance(self) -> None:
        path = find_imatrix(self.editor.saved, self.build_root)
        if path is None:
            return
        try:
            imp = load_importance(path)
        except DynqError as e:
            self.app.call_from_thread(self.status, f"imatrix: {e}", "yellow")
            return
        self.app.call_from_thread(self._set_importance, imp)

    # -- the template check ------------------------------------------------------------------
    def _template_cache(self) -> dict:
        cache = getattr(self.app, "template_results", None)
        return cache if isinstance(cache, dict) else {}

    def _check_template_on_open(self) -> None:
        self.start_template_check(force=False)

    def start_template_check(self, force: bool = False) -> None:
        """Check the saved recipe's chat template in a worker, unless this recipe's result is
        cached (``force``: run it anyway)."""
        loaded = self.editor.saved
        cached = None if force else self._template_cache().get(check_key(loaded))
        if cached is not None:
            self._template_checked(cached)
            return
        if self._template_running and not force:
            return
        self._template_running = True
        self.check_template(loaded)

    @work(thread=True, exclusive=True, group="template")
    def check_template(self, loaded) -> None:
        result = run_check(loaded)  # never raises
        if result.cacheable:
            self._template_cache()[result.key] = result
        self.post_message(TemplateChecked(result))

    def on_template_checked(self, msg: TemplateChecked) -> None:
        self._template_checked(msg.result)

    def _template_checked(self, result: TemplateResult) -> None:
        self._template_running = False
        if not self.is_mounted:
            return
        if result.key != check_key(self.editor.saved):  # saved meanwhile: check again
            self.start_template_check()
            return
        old, self.template = self.template, result
        from tui.screens.template import TemplateScreen

        for screen in self.app.screen_stack:
            if isinstance(screen, TemplateScreen) and screen.recheck == self.recheck_template:
                screen.show(result)
        if result.notable and (old is None or old.key != result.key):
            self.status(f"{result.short()}  (T: show)", "bold red" if not result.ok else "yellow")
        self.refresh_bindings()

    def recheck_template(self) -> None:
        self.start_template_check(force=True)

    def action_template(self, _where: str = "") -> None:
        from tui.screens.template import TemplateScreen

        r = self.editor.recipe
        current = self.template
        if current is not None and current.key != check_key(self.editor.saved):
            current = None
        title = f"Chat template · {r.name} {self.editor.saved.recipe.version}"
        if self.editor.dirty:
            title += " (as saved)"
        self.app.push_screen(TemplateScreen(title, current, self.recheck_template))
        if current is None:
            self.start_template_check()

    def _set_importance(self, imp: dict[str, float]) -> None:
        self.importance = imp
        self._stale.add("tensors")
        self._redraw_tab(self.active_tab)

    def on_resize(self, event) -> None:
        self.query_one("#body").set_class(event.size.width < NARROW, "narrow")

    # -- drawing ---------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        return self.editor.plan(self.target)

    def changed_names(self) -> set[str]:
        if not self.editor.dirty:
            return set()
        saved = self.editor.saved_plan(self.target)
        if saved is None:
            return set()
        old = saved.by_name()
        return {t.name for t in self.plan.tensors if t.name in old and old[t.name].type != t.type}

    def redraw(self) -> None:
        """Everything that depends on the Plan: the visible tab, summary, title. The hidden
        tabs are redrawn when they are shown."""
        changed = self.changed_names()
        self._stale = {"tensors", "map", "rules"}
        self._redraw_tab(self.active_tab or "tensors", changed)
        self.query_one("#summary", SummaryPanel).show(
            summarize(self.plan, self.editor.saved_plan(self.target) if self.editor.dirty else None)
        )
        self.query_one("#dirty", Static).update(
            Text(" ● unsaved", style="bold yellow") if self.editor.dirty else Text("")
        )
        self.sub_title = self.target

    def _redraw_tab(self, tab: str, changed: set[str] | None = None) -> None:
        if tab not in self._stale:
            return
        self._stale.discard(tab)
        if tab == "tensors":
            self.redraw_table(changed)
        elif tab == "map":
            changed = self.changed_names() if changed is None else changed
            self.query_one("#layer-map", LayerMapView).show(self.plan, changed)
        elif tab == "rules":
            self.redraw_rules()

    def redraw_table(self, changed: set[str] | None = None) -> None:
        table = self.query_one("#table", TensorTable)
        table.show(
            self.plan,
            self.filter,
            self.sort_column,
            self.sort_reverse,
            self.importance,
            self.changed_names() if changed is None else changed,
        )
        shown = len(table.names)
        total = len(self.plan.tensors)
        tabs = self.query_one("#tabs", TabbedContent)
        label = f"Tensors {shown}/{total}" if shown != total else f"Tensors {total}"
        tabs.get_tab("tensors").label = label

    def redraw_rules(self) -> None:
        rt = self.query_one("#rules-table", DataTable)
        row = rt.cursor_row
        rt.clear()
        counts: dict[str, int] = {}
        for t in self.plan.tensors:
            counts[t.rule] = counts.get(t.rule, 0) + 1
        target = self.editor.recipe.targets[self.target]
        base = target.extends or f"base {target.base}"
        n_base = sum(1 for t in self.plan.tensors if t.rule in ("base", target.extends))
        rt.add_row(
            Text("target", style="dim"),
            Text("every quantizable tensor", style="dim"),
            "all",
            base,
            str(n_base),
            target.note or "",
            key="target",
        )
        for label, rule in self.editor.all_rules(self.target):
            rt.add_row(
                label,
                rule.match,
                rule.layers or "all",
                rule.type,
                str(counts.get(label, 0)),
                rule.note or "",
                key=label,
            )
        if rt.row_count:
            rt.move_cursor(row=min(row, rt.row_count - 1))

    def status(self, msg: str, style: str = "") -> None:
        self.query_one("#status", Static).update(Text(msg, style=style))

    # -- selection -------------------------------------------------------------------------
    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def selection(self) -> list[str]:
        if self.active_tab == "map":
            t = self.query_one("#layer-map", LayerMapView).current
            return [t.name] if t else []
        if self.active_tab == "rules":
            label = self._current_rule()
            return [t.name for t in self.plan.tensors if t.rule == label] if label else []
        return self.query_one("#table", TensorTable).selection()

    def _current_rule(self) -> str | None:
        rt = self.query_one("#rules-table", DataTable)
        if not rt.row_count:
            return None
        key = str(rt.coordinate_to_cell_key(rt.cursor_coordinate).row_key.value)
        if key == "target":  # the target's base or stock mix: what its tensors got
            target = self.editor.recipe.targets[self.target]
            return "base" if target.base else target.extends
        return key

    def _describe(self, names: list[str]) -> tuple[str, str, str]:
        """(what, kinds, layers) of a selection, for dialogs."""
        by = self.plan.by_name()
        ts = [by[n] for n in names]
        kinds = sorted({short_kind(t.kind) for t in ts})
        layers = {t.layer for t in ts if t.layer is not None}
        from dynq.recipe import format_layers

        lay = format_layers(layers) if layers else ""
        if len(ts) == 1:
            what = ts[0].name
        else:
            what = f"{len(ts)} tensors ({', '.join(kinds[:3])}{'…' if len(kinds) > 3 else ''}"
            what += f", layers {lay})" if lay else ")"
        return what, ", ".join(kinds), lay

    # -- actions: editing ------------------------------------------------------------------
    def _edited(self, desc: str) -> None:
        self.redraw()
        self.status(f"✓ {desc}  (u: undo)", "green")

    def action_pick_type(self) -> None:
        names = self.selection()
        if not names:
            return
        from tui.screens.type_picker import TypePicker

        what, kinds, lay = self._describe(names)
        current_types = {self.plan.by_name()[n].type.name for n in names}
        current = current_types.pop() if len(current_types) == 1 else None

        def apply(qtype: str, scope: Scope, layers: str | None, note: str | None) -> str | None:
            try:
                desc = self.editor.set_type(self.target, names, qtype, scope, layers, note)
            except DynqError as e:
                return str(e)
            self._edited(desc)
            return None

        self.app.push_screen(TypePicker(what, kinds, current, lay, apply))

    def action_step(self, steps: int) -> None:
        names = self.selection()
        if not names:
            return
        try:
            desc = self.editor.step(self.target, names, steps, Scope.TENSORS)
        except DynqError as e:
            self.status(str(e), "bold red")
            self.app.bell()
            return
        self._edited(desc)

    def action_note(self) -> None:
        from tui.screens.note import NoteEditor

        if self.active_tab == "rules":
            label = self._current_rule()
        else:
            names = self.selection()
            label = self.plan.by_name()[names[0]].rule if names else None
        if label is None:
            return
        rule = self.editor.rule_at(self.target, label)
        if rule is None:
            self.status(
                f"the type comes from {label}, not a rule: set a type first (enter), "
                "then give that rule a note",
                "bold red",
            )
            return

        def apply(note: str) -> str | None:
            try:
                desc = self.editor.set_note(self.target, label, note)
            except DynqError as e:
                return str(e)
            self._edited(desc)
            return None

        self.app.push_screen(NoteEditor(f"{label} ({rule.match})", rule.note, apply))

    def action_delete_rule(self) -> None:
        if self.active_tab != "rules":
            return
        label = self._current_rule()
        if label is None:
            return
        try:
            desc = self.editor.delete_rule(self.target, label)
        except DynqError as e:
            self.status(str(e), "bold red")
            return
        self._edited(desc)

    def action_undo(self) -> None:
        desc = self.editor.undo()
        if desc is None:
            self.status("nothing to undo", "dim")
            return
        self.redraw()
        self.status(f"undone: {desc}", "yellow")

    def action_redo(self) -> None:
        desc = self.editor.redo()
        if desc is None:
            self.status("nothing to redo", "dim")
            return
        self.redraw()
        self.status(f"redone: {desc}", "yellow")

    # -- actions: navigation ---------------------------------------------------------------
    def action_mark(self) -> None:
        if self.active_tab == "tensors":
            self.query_one("#table", TensorTable).toggle_mark()
            self._marks_status()

    def action_mark_all(self) -> None:
        self.query_one("#table", TensorTable).mark_all()
        self._marks_status()

    def action_clear_marks(self) -> None:
        self.query_one("#table", TensorTable).clear_marks()
        self._marks_status()

    def _marks_status(self) -> None:
        n = len(self.query_one("#table", TensorTable).marks)
        self.status(f"{n} marked: enter sets their type, +/- steps them" if n else "", "")

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        try:
            self.filter = parse_filter(event.value)
        except FilterError as e:
            self.status(f"filter: {e}", "bold red")
            return
        self.status("")
        self.redraw_table()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.query_one("#tabs", TabbedContent).active = "tensors"
        self.query_one("#table", TensorTable).focus()

    def action_choose_target(self) -> None:
        from tui.screens.target_picker import TargetPicker

        targets = [
            (name, t.mix or f"base {t.base}") for name, t in self.editor.recipe.targets.items()
        ]

        def chosen(target: str | None) -> None:
            if target and target != self.target:
                self.set_target(target)

        self.app.push_screen(TargetPicker(targets, self.target), chosen)

    def action_next_target(self, step: int) -> None:
        targets = self.editor.targets
        self.set_target(targets[(targets.index(self.target) + step) % len(targets)])

    @on(events.Click, "#target")
    def target_clicked(self) -> None:
        self.action_choose_target()

    def set_target(self, target: str) -> None:
        try:
            self.editor.plan(target)
        except DynqError as e:
            self.status(str(e), "bold red")
            return
        self.target = target
        self.query_one("#table", TensorTable).clear_marks()
        self.query_one("#target", Static).update(self._target_label())
        self.redraw()
        self.status(f"target {target}", "dim")

    def action_sort(self) -> None:
        cols = [c for c in SORTABLE if c != "imp" or self.importance is not None]
        i = cols.index(self.sort_column) + 1 if self.sort_column in cols else 1
        self.sort_column = cols[i % len(cols)]
        self._sorted()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._sorted()

    def _sorted(self) -> None:
        self.redraw_table()
        label = dict(COLUMNS).get(self.sort_column or "name", "tensor order")
        self.status(f"sorted by {label}{' (reversed)' if self.sort_reverse else ''}", "dim")

    def on_header_clicked(self, event: HeaderClicked) -> None:
        key = event.column
        if self.sort_column == key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = key, key in ("bpw", "mb", "params", "imp")
        self._sorted()

    def on_row_chosen(self, event: RowChosen) -> None:
        self.action_pick_type()

    @on(DataTable.RowSelected, "#rules-table")
    def rule_selected(self) -> None:
        self.action_pick_type()

    def on_map_cell_chosen(self, msg: MapCellChosen) -> None:
        self.action_pick_type()

    def on_map_cursor_moved(self, msg: MapCursorMoved) -> None:
        self.query_one("#map-detail", Static).update(
            self.query_one("#layer-map", LayerMapView).detail()
        )

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        target = {"tensors": "#table", "map": "#layer-map", "rules": "#rules-table"}[tab]
        self.query_one(target).focus()

    def action_toggle_map(self) -> None:
        self.action_tab("tensors" if self.active_tab == "map" else "map")

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id or ""
        self._redraw_tab(pane)
        target = {"tensors": "#table", "map": "#layer-map", "rules": "#rules-table"}.get(pane)
        if target:
            self.query_one(target).focus()

    # -- actions: other screens ------------------------------------------------------------
    def action_save(self) -> None:
        if not self.editor.dirty:
            self.status("no changes to save", "dim")
            return
        from tui.screens.save import SaveScreen

        def done(saved: bool | None) -> None:
            if saved:
                self.redraw()
                self.status(f"saved {self.editor.path}", "bold green")

        self.app.push_screen(SaveScreen(self.editor), done)

    def action_build(self) -> None:
        if self.editor.dirty:
            self.status("save first (ctrl+s): a build is of the recipe on disk", "bold red")
            return
        from tui.screens.build import BuildScreen

        plan = self.editor.saved_plan(self.target) or self.plan
        out = self.build_root / self.editor.name
        screen = BuildScreen(
            self.editor.saved, self.target, out, plan.tensor_bytes, len(plan.tensors)
        )
        self.app.push_screen(screen)

    def action_compare(self) -> None:
        from tui.screens.compare import CompareScreen

        def done(target: str | None) -> None:
            if target:
                self.set_target(target)

        self.app.push_screen(CompareScreen(self.editor, self.build_root, self.target), done)

    def action_measured(self) -> None:
        from tui.screens.measure import MeasureScreen

        self.app.push_screen(MeasureScreen(self))

    def reload(self) -> None:
        """Open the recipe file again (after it was written outside the editor, e.g. by
        tuning) and redraw; the undo history starts afresh."""
        self.editor = Editor.open(self.editor.path)
        if self.target not in self.editor.recipe.targets:
            self.target = self.editor.targets[0]
        r = self.editor.recipe
        self.query_one("#recipe-title", Static).update(
            Text.assemble((r.name, "bold"), f" {r.version} · {r.model.arch} · ")
        )
        self.query_one("#target", Static).update(self._target_label())
        self.query_one("#table", TensorTable).clear_marks()
        self.redraw()
        self.set_timer(0.2, self.prefetch_plans)

    def action_back(self) -> None:
        focused = self.focused
        if isinstance(focused, Input):
            self.query_one("#table", TensorTable).focus()
            return
        self.app.leave_recipe(self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "delete_rule":
            return self.is_mounted and self.active_tab == "rules"
        if action == "template" and parameters == ("footer",):
            return self.template is not None and self.template.notable
        return True
