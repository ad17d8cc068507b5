"""The summary of a Plan: size, bpw, the change since the last save, a type histogram."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.model import Summary, bit_class, fmt_size


def _delta(n: int) -> str:
    sign = "+" if n >= 0 else "−"
    n = abs(n)
    if n >= 1e9:
        return f"{sign}{n / 1e9:,.2f} GB"
    if n >= 1e6:
        return f"{sign}{n / 1e6:,.2f} MB"
    return f"{sign}{n / 1e3:,.1f} kB"


class SummaryPanel(Static):
    """Renders a ``Summary``: a side panel when tall, two lines when docked at the bottom."""

    DEFAULT_CSS = """
    SummaryPanel { width: 30; height: 1fr; padding: 0 1; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.summary: Summary | None = None

    def show(self, s: Summary) -> None:
        self.summary = s
        self.update(self._render_summary())

    def on_resize(self) -> None:
        if self.summary is not None:
            self.update(self._render_summary())

    def _render_summary(self) -> Text:
        s = self.summary
        assert s is not None
        compact = self.size.height and self.size.height <= 3
        t = Text(no_wrap=compact, overflow="ellipsis")
        t.append(fmt_size(s.size), style="bold")
        t.append(f"  {s.bpw:.3f} bpw", style="bold")
        sep = "  " if compact else "\n"
        if s.size_delta:
            style = "red" if s.size_delta > 0 else "green"
            t.append(f"{sep}{_delta(s.size_delta)} ({s.bpw_delta:+.3f} bpw) unsaved", style=style)
        if compact:
            if s.fallbacks:
                t.append(f"  {s.fallbacks} fallbacks", style="dim")
        else:
            t.append(f"\n{s.tensors} tensors, {s.fallbacks} fallbacks", style="dim")
        if compact:
            t.append("\n")
            width = max(self.size.width - 2, 20)
            for name, _count, _nbytes, share in s.histogram:
                cells = max(1, round(share * width)) if share >= 0.005 else 0
                if not cells:
                    continue
                colour = bit_class(_type_bpw(name))[0]
                label = f"{name} {share:.0%}"
                if len(label) > cells:
                    label = name if len(name) <= cells else ""
                t.append(label.ljust(cells), style=f"black on {colour}")
            return t
        t.append("\n\n")
        t.append("type       n    share\n", style="bold dim")
        for name, count, _nbytes, share in s.histogram:
            colour = bit_class(_type_bpw(name))[0]
            t.append(f"{name:<8}", style=f"bold {colour}")
            t.append(f"{count:>4} ")
            bar = max(self.size.width - 2 - 19, 4)
            filled = round(share * bar)
            t.append("█" * filled, style=colour)
            t.append(" " * (bar - filled))
            t.append(f"{share:>5.0%}\n" if share >= 0.01 else f"{'<1%':>5}\n")
        return t


def _type_bpw(name: str) -> float:
    from dynq import qtypes

    return qtypes.parse_type(name).bpw
