"""Choose one of a recipe's targets."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class TargetPicker(ModalScreen[str | None]):
    """Dismisses with the chosen target, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, targets: list[tuple[str, str]], current: str) -> None:
        """``targets``: (name, what it is based on)."""
        super().__init__()
        self.targets = targets
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog targets"):
            yield Static("Target", classes="dialog-title")
            options = []
            for name, base in self.targets:
                label = Text.assemble((f"{name:<20}", "bold"), (base, "dim"))
                if name == self.current:
                    label.append("  ← now", style="bold")
                options.append(Option(label, id=name))
            yield OptionList(*options, id="target-list", compact=True)

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.highlighted = ol.get_option_index(self.current)
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
