"""The layer × tensor-kind map: every quantized tensor of a layer as one coloured cell."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer
from textual.geometry import Region
from textual.reactive import reactive
from textual.widget import Widget

from dynq.plan import Plan, PlannedTensor
from tui.messages import MapCellChosen, MapCursorMoved
from tui.model import BIT_CLASSES, LayerMap, bit_char, bit_class, layer_map, short_kind

LABEL_WIDTH = 16


class LayerMapView(Widget, can_focus=True):
    """Rows are tensor kinds, columns layers; the cell shows the type's whole bits, coloured.

    Arrow keys move a cursor; the line under the map names the tensor under it; enter picks it.
    """

    DEFAULT_CSS = """
    LayerMapView {
        height: auto; width: auto; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(0, -1)", "Up", show=False),
        Binding("down", "move(0, 1)", "Down", show=False),
        Binding("left", "move(-1, 0)", "Left", show=False),
        Binding("right", "move(1, 0)", "Right", show=False),
        Binding("home", "move(-9999, 0)", "First layer", show=False),
        Binding("end", "move(9999, 0)", "Last layer", show=False),
        Binding("enter", "choose", "Type"),
    ]

    row = reactive(0)
    col = reactive(0)

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.map: LayerMap | None = None
        self.changed: set[str] = set()

    def show(self, plan: Plan, changed: set[str] | None = None) -> None:
        self.map = layer_map(plan)
        self.changed = changed or set()
        if self.map.kinds:
            self.row = min(self.row, len(self.map.kinds) - 1)
            self.col = min(self.col, max(self.map.n_layers - 1, 0))
        self.refresh(layout=True)
        self._cursor_moved()

    def _avail(self) -> int:
        parent = self.parent
        width = parent.size.width if parent is not None and parent.size.width else 80
        return max(width - 2 - 2, 20)  # padding, a vertical scrollbar

    @property
    def label_width(self) -> int:
        n = self.map.n_layers if self.map else 0
        return max(8, min(LABEL_WIDTH, self._avail() - n))

    @property
    def cell_width(self) -> int:
        if self.map is None or not self.map.n_layers:
            return 1
        avail = max(self._avail() - self.label_width, self.map.n_layers)
        return max(1, min(3, avail // self.map.n_layers))

    def get_content_width(self, container, viewport) -> int:
        if self.map is None:
            return 40
        return max(self.label_width + self.map.n_layers * self.cell_width, 60)

    @property
    def current(self) -> PlannedTensor | None:
        if self.map is None or not self.map.kinds:
            return None
        return self.map.cells.get((self.map.kinds[self.row], self.col))

    def action_move(self, dx: int, dy: int) -> None:
        if self.map is None or not self.map.kinds:
            return
        self.col = max(0, min(self.map.n_layers - 1, self.col + dx))
        self.row = max(0, min(len(self.map.kinds) - 1, self.row + dy))

    def action_choose(self) -> None:
        t = self.current
        if t is not None:
            self.post_message(MapCellChosen(t.name))

    def on_click(self, event: events.Click) -> None:
        if self.map is None:
            return
        x, y = event.x - 1 - self.label_width, event.y - 1  # padding, label; header line
        if 0 <= y < len(self.map.kinds) and x >= 0:
            col = x // self.cell_width
            if col < self.map.n_layers:
                self.row, self.col = y, col
                if event.chain > 1:
                    self.action_choose()

    def get_content_height(self, container, viewport, width: int) -> int:
        n = len(self.map.kinds) if self.map else 0
        return n + 1 + (1 if self.map and self.map.other else 0)

    def watch_row(self) -> None:
        self._cursor_moved()

    def watch_col(self) -> None:
        self._cursor_moved()

    def _cursor_moved(self) -> None:
        t = self.current
        self.post_message(MapCursorMoved(t.name if t else None))
        parent = self.parent
        if isinstance(parent, ScrollableContainer) and self.map is not None:
            x = 1 + self.label_width + self.col * self.cell_width
            parent.scroll_to_region(Region(x, 1 + self.row, self.cell_width, 1), animate=False)

    def detail(self) -> Text:
        """The legend, and the tensor under the cursor (shown above the map)."""
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append("bits ", style="dim")
        for _, colour, label in BIT_CLASSES:
            out.append(f" {label} ", style=f"black on {colour}")
        out.append("  * fallback  ←↑↓→ move, enter: type\n", style="dim")
        t = self.current
        if t is not None:
            fb = f" (fallback from {t.fallback_from.name})" if t.fallback_from else ""
            out.append(f"▶ {t.name}: ", style="bold")
            out.append(f"{t.type.name}{fb}, {t.bpw:.2f} bpw", style=f"bold {bit_class(t.bpw)[0]}")
            out.append(f" — {t.rule}" + (f": {t.note}" if t.note else ""))
        else:
            out.append("▶ (no quantized tensor here)", style="dim")
        return out

    def render(self) -> Text:
        m = self.map
        if m is None or not m.kinds:
            return Text("no layered tensors to map", style="dim")
        w = self.cell_width
        out = Text(no_wrap=True, overflow="crop")
        # header: layer numbers every 10 columns (every 5 when cells are wide)
        step = 5 if w >= 2 else 10
        head = [" "] * (m.n_layers * w)
        for layer in range(0, m.n_layers, step):
            s = str(layer)
            for i, ch in enumerate(s):
                pos = layer * w + i
                if pos < len(head):
                    head[pos] = ch
        lw = self.label_width
        out.append("layer".ljust(lw), style="dim")
        out.append("".join(head) + "\n", style="dim")
        focused = self.has_focus
        for r, kind in enumerate(m.kinds):
            label = short_kind(kind)
            label = label if len(label) < lw else label[: lw - 2] + "…"
            out.append(label.ljust(lw), style="bold" if r == self.row else "")
            for c in range(m.n_layers):
                t = m.cells.get((kind, c))
                if t is None:
                    out.append(" " * w)
                    continue
                colour, _ = bit_class(t.bpw)
                ch = bit_char(t.bpw)
                if t.fallback_from is not None and w >= 2:
                    ch += "*"
                text = ch.center(w)[:w]
                style = f"black on {colour}"
                if t.name in self.changed:
                    style = f"bold underline black on {colour}"
                if r == self.row and c == self.col:
                    style = "bold reverse" if focused else "bold white on grey35"
                out.append(text, style=style)
            out.append("\n")
        if m.other:
            parts = [f"{short_kind(t.name)} {t.type.name}" for t in m.other]
            out.append("outside layers: " + ", ".join(parts), style="dim")
        return out
