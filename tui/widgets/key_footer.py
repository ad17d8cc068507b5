"""A one-line footer of the current key bindings, drawn as text.

Textual's Footer composes a widget per key and recomposes on every focus change, which costs
more than the whole tensor table when a screen opens; this draws the same keys as one line
and still answers clicks (a click presses the key).
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widget import Widget


class KeyFooter(Widget):
    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) of each entry

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        self.refresh()

    def render(self) -> Text:
        out = Text()
        spans: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            start = out.cell_len
            key_style = "bold $footer-key-foreground" if enabled else "dim"
            out.append(self.app.get_key_display(binding), style=_resolve(self, key_style))
            out.append(f" {binding.description}", style="" if enabled else "dim")
            spans.append((start, out.cell_len, binding.key))
            out.append(" ")
        self._spans = spans
        return out

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                event.stop()
                self.app.simulate_key(key)
                return


def _resolve(widget: Widget, style: str) -> str:
    """Textual variables are not understood by rich: use the footer key colour directly."""
    if "$footer-key-foreground" in style:
        colour = widget.app.theme_variables.get("footer-key-foreground", "yellow")
        return style.replace("$footer-key-foreground", colour)
    return style
