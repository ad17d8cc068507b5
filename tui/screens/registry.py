"""The registry browser: every recipe, its targets and its last builds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from tui.model import RecipeEntry, fmt_size, scan_registry
from tui.widgets.key_footer import KeyFooter


class RegistryScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", priority=True),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, registry: Path, build_root: Path) -> None:
        super().__init__()
        self.registry = registry
        self.build_root = build_root
        self.entries: list[RecipeEntry] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                Text.assemble(("dynq registry ", "bold"), (f"{self.registry}/", "dim")),
                id="registry-title",
            )
            yield DataTable(id="recipes", cursor_type="row", zebra_stripes=True)
            yield Static("", id="detail")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#recipes", DataTable)
        for key, label in [
            ("name", "recipe"),
            ("version", "version"),
            ("arch", "arch"),
            ("targets", "targets"),
            ("built", "built"),
            ("last", "last build"),
        ]:
            table.add_column(label, key=key)
        self.action_refresh()
        table.focus()

    def action_refresh(self) -> None:
        table = self.query_one("#recipes", DataTable)
        row = table.cursor_row
        table.clear()
        self.entries = scan_registry(self.registry, self.build_root)
        for e in self.entries:
            last = max((b.mtime for b in e.builds), default=None)
            table.add_row(
                Text(e.name, style="bold" if e.loaded else "bold red"),
                e.version,
                e.arch,
                str(len(e.targets)) if e.loaded else "—",
                f"{len(e.builds)}/{len(e.targets)}" if e.loaded else "—",
                dt.datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M") if last else "never",
                key=str(e.path),
            )
        if not self.entries:
            self.query_one("#detail", Static).update(
                Text(f"no recipes (*.toml) in {self.registry}/", style="yellow")
            )
        elif table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))
            self._show_detail(table.cursor_row)

    def _show_detail(self, row: int) -> None:
        if not (0 <= row < len(self.entries)):
            return
        e = self.entries[row]
        t = Text()
        if e.error:
            t.append(e.error, style="bold red")
        else:
            t.append(e.description + "\n", style="italic")
            built = {b.target: b for b in e.builds}
            for name in e.targets:
                b = built.get(name)
                t.append(f"  {name:<16}", style="bold")
                if b:
                    stale = bool(b.recipe_sha256) and b.recipe_sha256 != e.loaded.sha256
                    t.append(
                        f"built {fmt_size(b.file_size)} in {b.seconds:.1f} s "
                        f"(recipe {b.recipe_version})",
                        style="yellow" if stale else "green",
                    )
                    t.append(" — the recipe changed since\n" if stale else "\n", style="yellow")
                else:
                    t.append("not built\n", style="dim")
            t.append("enter: open · ? help", style="dim")
        self.query_one("#detail", Static).update(t)

    @on(DataTable.RowHighlighted, "#recipes")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    @on(DataTable.RowSelected, "#recipes")
    def selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one("#recipes", DataTable)
        if not table.row_count:
            return
        e = self.entries[table.cursor_row]
        if e.error:
            self.notify(e.error, severity="error", timeout=8)
            return
        self.app.open_recipe(e.path)
