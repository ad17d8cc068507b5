"""A question with a few answers, each on a key (e.g. unsaved changes: save, discard, cancel)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[str | None]):
    """Dismisses with the chosen answer's id, or None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, title: str, question: str, answers: list[tuple[str, str, str]]) -> None:
        """``answers``: (id, label, key) — the key answers from the keyboard."""
        super().__init__()
        self.title_text = title
        self.question = question
        self.answers = answers

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.question, classes="dialog-body", markup=False)
            with Horizontal(classes="buttons"):
                for i, (aid, label, key) in enumerate(self.answers):
                    variant = "primary" if i == 0 else "default"
                    yield Button(
                        f"{label} ({key})", id=f"answer-{aid}", variant=variant, compact=True
                    )

    def on_key(self, event) -> None:
        for aid, _label, key in self.answers:
            if event.key == key:
                event.stop()
                self.dismiss(aid)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss((event.button.id or "").removeprefix("answer-"))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
