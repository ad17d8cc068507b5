"""The tensor table: one row per tensor of a Plan, filtered, sorted, with marks.

A ScrollView drawing only the visible lines (the Line API, as toolong does): a 1086-tensor
Plan redraws in milliseconds, where DataTable measures every cell of every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dynq.plan import Plan, PlannedTensor
from tui.model import COLUMNS, NUMERIC, Filter, bit_class, fmt_mb, fmt_params, short_kind, sort_key

MARK = "●"
MAX_WIDTH = {"name": 32, "rule": 30, "note": 48, "kind": 20, "shape": 18}


@dataclass
class RowChosen(Message):
    """Enter or a double click on a row."""

    name: str


@dataclass
class HeaderClicked(Message):
    column: str


class TensorTable(ScrollView, can_focus=True):
    """Rows keyed by tensor name. ``show`` redraws from a Plan, keeping the cursor's tensor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "tensor-table--header",
        "tensor-table--cursor",
        "tensor-table--even",
        "tensor-table--changed",
    }
    DEFAULT_CSS = """
    TensorTable { height: 1fr; }
    TensorTable > .tensor-table--header { text-style: bold; background: $panel; }
    TensorTable > .tensor-table--cursor { background: $accent 40%; }
    TensorTable:focus > .tensor-table--cursor { background: $accent 70%; }
    TensorTable > .tensor-table--even { background: $boost; }
    TensorTable > .tensor-table--changed { text-style: reverse; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor(-1000000)", "First", show=False),
        Binding("end", "cursor(1000000)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "choose", "Type"),
    ]

    cursor = reactive(0, always_update=True)

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.marks: set[str] = set()
        self.rows: list[PlannedTensor] = []
        self.names: list[str] = []
        self.columns: list[tuple[str, str]] = []
        self.widths: list[int] = []
        self.changed: set[str] = set()
        self.importance: dict[str, float] | None = None
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._plan: Plan | None = None
        self._cells: dict[str, list[tuple[str, str]]] = {}
        self._tt_styles: tuple[Style, Style, Style, Style, Style] | None = None
        self._tt_focus = False
        self._parsed: dict[str, Style] = {}

    # -- data ------------------------------------------------------------------------------
    def show(
        self,
        plan: Plan,
        flt: Filter,
        sort: str | None,
        reverse: bool,
        importance: dict[str, float] | None,
        changed: set[str] | None = None,
    ) -> None:
        current = self.current_name
        self._plan = plan
        self.importance = importance
        self.changed = changed or set()
        self.sort_column, self.sort_reverse = sort, reverse
        self.columns = [c for c in COLUMNS if importance is not None or c[0] != "imp"]
        rows = [t for t in plan.tensors if flt(t)]
        if sort:
            rows.sort(key=sort_key(sort, importance), reverse=reverse)
        elif reverse:
            rows.reverse()
        self.rows = rows
        self.names = [t.name for t in rows]
        self._cells = {t.name: self._row_cells(t) for t in rows}
        self.widths = [1]  # the mark column
        for i, (key, label) in enumerate(self.columns):
            w = max((cell_len(c[i + 1][0]) for c in self._cells.values()), default=0)
            w = max(w, cell_len(label) + 1)
            self.widths.append(min(w, MAX_WIDTH.get(key, 1000)))
        width = sum(self.widths) + len(self.widths)
        self.virtual_size = Size(width, len(rows) + 1)
        index = {n: i for i, n in enumerate(self.names)}
        self.cursor = index.get(current or "", min(self.cursor, max(len(rows) - 1, 0)))
        self.refresh()

    def _row_cells(self, t: PlannedTensor) -> list[tuple[str, str]]:
        colour, _ = bit_class(t.bpw)
        rule = "stock" if t.rule.startswith("llama.cpp:") else t.rule
        note = t.note or ""
        if t.fallback_from:
            note = f"fallback from {t.fallback_from.name}" + (f"; {note}" if note else "")
        quant = t.type.is_quantized
        v = self.importance.get(t.name) if self.importance is not None else None
        by_key = {
            "name": (t.name, ""),
            "type": (
                t.type.name + ("*" if t.fallback_from else ""),
                f"bold {colour}" if quant else "dim",
            ),
            "bpw": (f"{t.bpw:.2f}", ""),
            "mb": (fmt_mb(t.bytes), ""),
            "imp": ("—" if v is None else f"{v:.3g}", ""),
            "rule": (rule, "dim" if rule in ("stock", "not quantized", "base") else ""),
            "note": (note, "italic"),
            "layer": ("" if t.layer is None else str(t.layer), ""),
            "kind": (short_kind(t.kind), ""),
            "shape": ("×".join(map(str, t.shape)), "dim"),
            "params": (fmt_params(t.n_elements), ""),
        }
        mark = (MARK if t.name in self.marks else " ", "bold")
        return [mark, *(by_key[k] for k, _ in self.columns)]

    @property
    def current_name(self) -> str | None:
        if 0 <= self.cursor < len(self.names):
            return self.names[self.cursor]
        return None

    def toggle_mark(self) -> None:
        name = self.current_name
        if name is None:
            return
        self.marks.symmetric_difference_update({name})
        self._cells[name][0] = (MARK if name in self.marks else " ", "bold")
        self.action_cursor(1)

    def mark_all(self) -> None:
        for name in self.names:
            self.marks.add(name)
            self._cells[name][0] = (MARK, "bold")
        self.refresh()

    def clear_marks(self) -> None:
        for name in self.marks:
            if name in self._cells:
                self._cells[name][0] = (" ", "bold")
        self.marks.clear()
        self.refresh()

    def selection(self) -> list[str]:
        """Marked tensors (in plan order), else the tensor under the cursor."""
        if self.marks:
            order = {t.name: i for i, t in enumerate(self._plan.tensors)} if self._plan else {}
            return sorted(self.marks, key=lambda n: order.get(n, 0))
        name = self.current_name
        return [name] if name else []

    def go_to(self, name: str) -> bool:
        if name in self.names:
            self.cursor = self.names.index(name)
            return True
        return False

    # -- cursor ----------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        body = max(self.size.height - 1, 1)
        y = self.scroll_offset.y
        if new < y:
            self.scroll_to(y=new, animate=False)
        elif new >= y + body:
            self.scroll_to(y=new - body + 1, animate=False)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(self.size.height - 2, 1))

    def action_choose(self) -> None:
        name = self.current_name
        if name is not None:
            self.post_message(RowChosen(name))

    def on_click(self, event: events.Click) -> None:
        x = event.x + self.scroll_offset.x
        if event.y == 0:
            pos = 0
            for i, w in enumerate(self.widths):
                if pos <= x < pos + w + 1 and i > 0:
                    self.post_message(HeaderClicked(self.columns[i - 1][0]))
                    return
                pos += w + 1
            return
        row = self.scroll_offset.y + event.y - 1
        if 0 <= row < len(self.rows):
            self.cursor = row
            if event.chain > 1:
                self.action_choose()

    # -- drawing ---------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._tt_styles = None

    def _row_styles(self) -> tuple[Style, Style, Style, Style, Style]:
        if self._tt_styles is None or self._tt_focus != self.has_focus:
            g = self.get_component_rich_style
            self._tt_styles = (
                g("tensor-table--header"),
                g("tensor-table--cursor"),
                g("tensor-table--even"),
                g("tensor-table--changed", partial=True),
                Style(),
            )
            self._tt_focus = self.has_focus
        return self._tt_styles  # type: ignore[return-value]

    def _on_focus(self, event) -> None:
        self._tt_styles = None
        self.refresh()

    def _on_blur(self, event) -> None:
        self._tt_styles = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        x0 = self.scroll_offset.x
        if y == 0:
            return self._header().crop_extend(x0, x0 + width, None)
        row = self.scroll_offset.y + y - 1
        if row >= len(self.rows):
            return Strip.blank(width)
        name = self.names[row]
        _, cursor, even, changed_style, base = self._row_styles()
        if row == self.cursor:
            base = cursor
        elif row % 2:
            base = even
        segs: list[Segment] = []
        for i, ((text, style), w) in enumerate(zip(self._cells[name], self.widths, strict=False)):
            key = "mark" if i == 0 else self.columns[i - 1][0]
            if style:
                parsed = self._parsed.get(style)
                if parsed is None:
                    parsed = self._parsed[style] = Style.parse(style)
                s = base + parsed
            else:
                s = base
            if key == "type" and name in self.changed:
                s = s + changed_style
            segs.append(Segment(_fit(text, w, key in NUMERIC), s))
            segs.append(Segment(" ", base))
        strip = Strip(segs)
        return strip.crop_extend(x0, x0 + width, base)

    def _header(self) -> Strip:
        style = self._row_styles()[0]
        segs = [Segment(" " * (self.widths[0] + 1) if self.widths else "", style)]
        for (key, label), w in zip(self.columns, self.widths[1:], strict=False):
            if key == self.sort_column:
                label += "▼" if self.sort_reverse else "▲"
            segs.append(Segment(_fit(label, w, key in NUMERIC) + " ", style))
        return Strip(segs)


def _fit(text: str, width: int, right: bool) -> str:
    n = cell_len(text)
    if n > width:
        return text[: max(width - 1, 0)] + "…"
    return " " * (width - n) + text if right else text + " " * (width - n)
