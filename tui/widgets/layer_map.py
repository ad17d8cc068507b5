"""The layer × tensor-kind map: every quantized tensor of a layer as one coloured cell."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.reactive import reactive
from textual.widget import Widget

from dynq.plan import Plan, PlannedTensor
from tui.messages import MapCellChosen
from tui.model import BIT_CLASSES, LayerMap, bit_char, bit_class, layer_map, short_kind

LABEL_WIDTH = 16


class LayerMapView(Widget, can_focus=True):
    """Rows are tensor kinds, columns layers; the cell shows the type's whole bits, coloured.

    Arrow keys move a cursor; the line under the map names the tensor under it; enter picks it.
    """

    DEFAULT_CSS = """
    LayerMapView { height: auto; width: 1fr; padding: 0 1; }
    """

    BINDINGS = [
        Binding("up", "move(0, -1)", "Up", show=False),
        Binding("down", "move(0, 1)", "Down", show=False),
        Binding("left", "move(-1, 0)", "Left", show=False),
        Binding("right", "move(1, 0)", "Right", show=False),
        Binding("home", "move(-9999, 0)", "First layer", show=False),
        Binding("end", "move(9999, 0)", "Last layer", show=False),
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

    @property
    def cell_width(self) -> int:
        if self.map is None or not self.map.n_layers:
            return 1
        avail = max(self.size.width - LABEL_WIDTH - 2, self.map.n_layers)
        return max(1, min(3, avail // self.map.n_layers))

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

    def key_enter(self) -> None:
        t = self.current
        if t is not None:
            self.post_message(MapCellChosen(t.name))

    def on_click(self, event: events.Click) -> None:
        if self.map is None:
            return
        x, y = event.x - 1 - LABEL_WIDTH, event.y - 1  # padding, label; header line
        if 0 <= y < len(self.map.kinds) and x >= 0:
            col = x // self.cell_width
            if col < self.map.n_layers:
                self.row, self.col = y, col
                if event.chain > 1:
                    self.key_enter()

    def get_content_height(self, container, viewport, width: int) -> int:
        n = len(self.map.kinds) if self.map else 0
        return n + 4 + (1 if self.map and self.map.other else 0)

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
        out.append("layer".ljust(LABEL_WIDTH), style="dim")
        out.append("".join(head) + "\n", style="dim")
        focused = self.has_focus
        for r, kind in enumerate(m.kinds):
            label = short_kind(kind)
            label = label if len(label) < LABEL_WIDTH else label[: LABEL_WIDTH - 2] + "…"
            out.append(label.ljust(LABEL_WIDTH), style="bold" if r == self.row else "")
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
            out.append("outside layers: " + ", ".join(parts) + "\n", style="dim")
        t = self.current
        if t is not None:
            fb = f" (fallback from {t.fallback_from.name})" if t.fallback_from else ""
            out.append(f"▶ {t.name}: ", style="bold")
            out.append(f"{t.type.name}{fb}, {t.bpw:.2f} bpw", style=f"bold {bit_class(t.bpw)[0]}")
            out.append(f" — {t.rule}" + (f": {t.note}" if t.note else "") + "\n")
        else:
            out.append("▶ (no quantized tensor here)\n", style="dim")
        legend = Text("bits: ", style="dim")
        for _, colour, label in BIT_CLASSES:
            legend.append(f" {label} ", style=f"black on {colour}")
            legend.append(" ")
        legend.append("  * fallback", style="dim")
        out.append_text(legend)
        return out
