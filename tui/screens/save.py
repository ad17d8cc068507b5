"""Save: the diff against the file on disk (as ``dynq diff`` shows it), then an atomic write."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from dynq.diff import RecipeDiff, render_text
from dynq.errors import DynqError
from tui.editor import Editor


class SaveScreen(ModalScreen[bool]):
    """Dismisses True once the file is written, False when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s,enter", "save", "Save"),
        Binding("v", "bump_and_save", "Bump version & save"),
    ]

    def __init__(self, editor: Editor) -> None:
        super().__init__()
        self.editor = editor
        self.diff: RecipeDiff | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog save"):
            yield Static(f"Save {self.editor.path.name}?", classes="dialog-title", markup=False)
            with VerticalScroll(id="diff-scroll"):
                yield Static("computing the diff…", id="diff")
            yield Static("", id="save-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True)
                yield Button("Bump version & save (v)", id="bump", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#bump").display = False
        self.compute_diff()

    @work(thread=True, exclusive=True)
    def compute_diff(self) -> None:
        try:
            d = self.editor.diff()
        except DynqError as e:
            self.app.call_from_thread(self._error, str(e))
            return
        self.app.call_from_thread(self._show_diff, d)

    def _show_diff(self, d: RecipeDiff) -> None:
        self.diff = d
        text = Text()
        for line in render_text(d).splitlines():
            style = ""
            if line.startswith("warning"):
                style = "bold yellow"
            elif line.lstrip().startswith("+"):
                style = "green"
            elif line.lstrip().startswith("-"):
                style = "red"
            elif line.lstrip().startswith("~"):
                style = "yellow"
            elif line.startswith("target") and ": same," in line:
                style = "dim"
            elif line.startswith("target"):
                style = "bold"
            text.append(line + "\n", style=style)
        if self.editor.reformats:
            text.append(
                "note: the file is not in canonical form; saving also reformats it (as dynq fmt)\n",
                style="italic yellow",
            )
        self.query_one("#diff", Static).update(text)
        self.query_one("#bump").display = d.version_warning is not None

    def _error(self, msg: str) -> None:
        self.query_one("#save-error", Static).update(Text(msg, style="bold red"))

    def action_save(self) -> None:
        try:
            self.editor.save()
        except (DynqError, OSError) as e:
            self._error(f"not saved: {e}")
            return
        self.dismiss(True)

    def action_bump_and_save(self) -> None:
        if self.diff is None or self.diff.version_warning is None:
            return
        try:
            self.editor.bump_version()
        except DynqError as e:
            self._error(str(e))
            return
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "bump":
            self.action_bump_and_save()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
