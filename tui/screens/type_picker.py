"""Choose a GGML type for the selected tensors, and what the change becomes in the recipe."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from dynq import qtypes
from tui.editor import Scope
from tui.model import bit_class

# Apply callback: (type, scope, layers, note) -> error message, or None when applied.
ApplyFn = Callable[[str, Scope, str | None, str | None], str | None]


def type_options(current: str | None) -> list[Option]:
    """The ladder (by bits per weight), then the other storage types."""
    ladder = [qtypes.get(t) for t in qtypes.LADDER]
    others = sorted(
        (t for t in qtypes.all_types().values() if t.storable and t.gguf not in qtypes.LADDER),
        key=lambda t: t.bpw,
    )
    out: list[Option] = []
    for t in [*ladder, *others]:
        label = Text()
        label.append(f"{t.name:<8}", style=f"bold {bit_class(t.bpw)[0]}")
        label.append(f" {t.bpw:5.2f} bpw")
        if t.needs_imatrix:
            label.append("  needs imatrix", style="dim")
        if t.gguf not in qtypes.LADDER:
            label.append("  off-ladder", style="dim")
        if current and t.name == current:
            label.append("  ← now", style="bold")
        out.append(Option(label, id=t.key))
    return out


class TypePicker(ModalScreen[str | None]):
    """Dismisses with the applied change's description, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s,ctrl+enter", "apply", "Apply"),
    ]

    def __init__(
        self, what: str, kinds: str, current: str | None, layers_hint: str, apply: ApplyFn
    ) -> None:
        super().__init__()
        self.what = what
        self.kinds = kinds
        self.current = current
        self.layers_hint = layers_hint
        self.apply_fn = apply

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Static(f"Set type: {self.what}", classes="dialog-title", markup=False)
            yield OptionList(*type_options(self.current), id="types", compact=True)
            with RadioSet(id="scope", compact=True):
                yield RadioButton("exactly these tensors", value=True, id="scope-tensors")
                yield RadioButton(f"{self.kinds}: every layer", id="scope-kind")
                yield RadioButton(f"{self.kinds}: layers ↓", id="scope-layers")
            with Horizontal(classes="field"):
                yield Static("layers ", classes="label")
                yield Input(
                    value=self.layers_hint, placeholder="e.g. 0-3,58-60", id="layers", compact=True
                )
            with Horizontal(classes="field"):
                yield Static("note   ", classes="label")
                yield Input(placeholder="why (kept in the recipe)", id="note", compact=True)
            yield Static("", id="picker-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply (ctrl+s)", id="apply", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        ol = self.query_one("#types", OptionList)
        if self.current:
            try:
                ol.highlighted = ol.get_option_index(self.current.lower())
            except Exception:
                pass
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_apply()

    def _scope(self) -> Scope:
        pressed = self.query_one("#scope", RadioSet).pressed_button
        pid = pressed.id if pressed else "scope-tensors"
        return {
            "scope-tensors": Scope.TENSORS,
            "scope-kind": Scope.KIND,
            "scope-layers": Scope.LAYERS,
        }[pid or "scope-tensors"]

    def action_apply(self) -> None:
        ol = self.query_one("#types", OptionList)
        if ol.highlighted is None:
            self._error("choose a type")
            return
        qtype = ol.get_option_at_index(ol.highlighted).id or ""
        scope = self._scope()
        layers = self.query_one("#layers", Input).value.strip() or None
        note = self.query_one("#note", Input).value.strip() or None
        if scope is Scope.LAYERS and not layers:
            self._error("give a layer range, e.g. 3-5,58-60")
            return
        err = self.apply_fn(qtype, scope, layers, note)
        if err:
            self._error(err)
        else:
            self.dismiss(qtype)

    def _error(self, msg: str) -> None:
        self.query_one("#picker-error", Static).update(Text(msg, style="bold red"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self.action_apply()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
