"""A size-vs-KLD scatter plot drawn with characters; the Pareto front is marked."""

from __future__ import annotations

import itertools
import math

from rich.text import Text
from textual.widget import Widget

from tui.model import ComparePoint, fmt_size


class ParetoChart(Widget):
    """x: file size (GB), y: mean KLD (log scale). ◆ on the Pareto front, ○ off it."""

    DEFAULT_CSS = """
    ParetoChart { height: 1fr; min-height: 8; padding: 0 1; text-wrap: nowrap; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.points: list[ComparePoint] = []

    def show(self, points: list[ComparePoint]) -> None:
        self.points = points
        self.refresh()

    def render(self) -> Text:
        pts = [p for p in self.points if p.kld is not None and p.kld > 0]
        if not pts:
            return Text(
                "No evaluation reports yet: size-vs-KLD appears here once "
                "build/<name>/<name>-<target>.eval.json files exist (dynq eval).",
                style="dim",
            )
        width = max(self.size.width - 2, 30)
        height = max(self.size.height, 6)
        left = 9  # y-axis labels
        pw, ph = width - left - 1, height - 3  # plot area
        xs = [p.size / 1e9 for p in pts]
        ys = [math.log10(p.kld) for p in pts]  # type: ignore[arg-type]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 - x0 < 1e-9:
            x0, x1 = x0 * 0.9, x1 * 1.1 + 1e-9
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 0.5, y1 + 0.5
        grid = [[" "] * pw for _ in range(ph)]
        style = [[""] * pw for _ in range(ph)]

        def pos(x: float, y: float) -> tuple[int, int]:
            cx = round((x - x0) / (x1 - x0) * (pw - 1))
            cy = ph - 1 - round((y - y0) / (y1 - y0) * (ph - 1))
            return cx, cy

        front = sorted((p for p in pts if p.pareto), key=lambda p: p.size)
        for a, b in itertools.pairwise(front):  # the front as a dotted line
            ax, ay = pos(a.size / 1e9, math.log10(a.kld))  # type: ignore[arg-type]
            bx, by = pos(b.size / 1e9, math.log10(b.kld))  # type: ignore[arg-type]
            n = max(abs(bx - ax), abs(by - ay), 1)
            for i in range(1, n):
                cx = ax + round((bx - ax) * i / n)
                cy = ay + round((by - ay) * i / n)
                if grid[cy][cx] == " ":
                    grid[cy][cx], style[cy][cx] = "·", "green"
        for p in sorted(pts, key=lambda p: p.pareto):
            cx, cy = pos(p.size / 1e9, math.log10(p.kld))  # type: ignore[arg-type]
            grid[cy][cx] = "◆" if p.pareto else "○"
            style[cy][cx] = "bold green" if p.pareto else "yellow"
            label = " " + p.target
            start = cx + 1 if cx + len(label) < pw else max(cx - len(label), 0)
            for i, ch in enumerate(label):
                x = start + i
                if 0 <= x < pw and grid[cy][x] in (" ", "·"):
                    grid[cy][x], style[cy][x] = ch, style[cy][cx].replace("bold ", "")
        out = Text(no_wrap=True, overflow="crop")
        for r in range(ph):
            if r == 0:
                lab = f"{10**y1:.3g}"
            elif r == ph - 1:
                lab = f"{10**y0:.3g}"
            elif r == ph // 2:
                lab = "KLD"
            else:
                lab = ""
            out.append(lab.rjust(left - 1)[: left - 1] + "│", style="dim")
            for c in range(pw):
                out.append(grid[r][c], style=style[r][c])
            out.append("\n")
        out.append(" " * (left - 1) + "└" + "─" * pw + "\n", style="dim")
        lo, hi = fmt_size(int(x0 * 1e9)), fmt_size(int(x1 * 1e9))
        axis = lo + "size".center(max(pw - len(lo) - len(hi), 4)) + hi
        out.append(" " * left + axis + "\n", style="dim")
        out.append(" " * left)
        out.append("◆ Pareto front", style="bold green")
        out.append("  ○ dominated (bigger and worse than another target)", style="yellow")
        return out
