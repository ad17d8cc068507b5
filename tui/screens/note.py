"""Edit the note of a rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class NoteEditor(ModalScreen[str | None]):
    """``apply(note)`` returns an error message or None; dismisses with the note when applied."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, what: str, note: str | None, apply: Callable[[str], str | None]) -> None:
        super().__init__()
        self.what = what
        self.note = note or ""
        self.apply_fn = apply

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog note"):
            yield Static(f"Note of {self.what}", classes="dialog-title", markup=False)
            yield Input(
                value=self.note,
                placeholder="why this type (empty: no note)",
                id="note",
                compact=True,
            )
            yield Static("", id="note-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply (enter)", id="apply", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply()

    def _apply(self) -> None:
        value = self.query_one("#note", Input).value
        err = self.apply_fn(value)
        if err:
            self.query_one("#note-error", Static).update(Text(err, style="bold red"))
        else:
            self.dismiss(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self._apply()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
