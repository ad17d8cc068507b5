"""Compare a recipe's targets: size and bpw from the Plans, KLD/PPL from eval reports."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from dynq.errors import DynqError
from tui.editor import Editor
from tui.model import ComparePoint, fmt_eval, fmt_size, pareto_front, read_eval
from tui.widgets.key_footer import KeyFooter
from tui.widgets.pareto_chart import ParetoChart


class CompareScreen(Screen[str | None]):
    """Dismisses with the target to open in the editor, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open in editor", priority=True),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, editor: Editor, build_root: Path, current: str | None = None) -> None:
        super().__init__()
        self.editor = editor
        self.build_root = build_root
        self.current = current
        self.points: list[ComparePoint] = []

    def compose(self) -> ComposeResult:
        r = self.editor.recipe
        with Vertical():
            unsaved = " (unsaved edits included)" if self.editor.dirty else ""
            yield Static(
                Text.assemble(("Compare ", "bold"), (r.name, "bold"), f" {r.version}{unsaved}"),
                id="compare-title",
            )
            yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
            yield ParetoChart(id="chart")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        for key, label in [
            ("target", "target"),
            ("base", "from"),
            ("size", "size"),
            ("bpw", "bpw"),
            ("mean_kld", "mean KLD"),
            ("p99_kld", "p99 KLD"),
            ("top1", "top-1"),
            ("ppl", "PPL"),
            ("front", "Pareto"),
        ]:
            table.add_column(label, key=key)
        name = self.editor.name
        for target in self.editor.targets:
            try:
                plan = self.editor.plan(target)
            except DynqError as e:
                self.notify(str(e), severity="error")
                continue
            ev = read_eval(self.build_root, name, target)
            self.points.append(ComparePoint(target, plan.file_size, plan.bpw, ev))
        pareto_front(self.points)
        for p in self.points:
            t = self.editor.recipe.targets[p.target]
            table.add_row(
                Text(p.target, style="bold" if p.target == self.current else ""),
                t.mix or f"base {t.base}",
                fmt_size(p.size),
                f"{p.bpw:.3f}",
                fmt_eval(p.eval.get("mean_kld"), "mean_kld"),
                fmt_eval(p.eval.get("p99_kld"), "p99_kld"),
                fmt_eval(p.eval.get("top1_agreement"), "top1_agreement"),
                fmt_eval(p.eval.get("ppl"), "ppl"),
                Text("◆", style="bold green") if p.pareto else ("○" if p.kld is not None else "—"),
                key=p.target,
            )
        if self.current in self.editor.targets:
            table.move_cursor(row=[p.target for p in self.points].index(self.current))
        self.query_one("#chart", ParetoChart).show(self.points)
        table.focus()

    def action_open(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self.dismiss(str(key))

    @on(DataTable.RowSelected)
    def selected(self) -> None:
        self.action_open()

    def action_close(self) -> None:
        self.dismiss(None)
