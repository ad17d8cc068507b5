"""The help screen: what the screens show and every key."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dynq TUI

**Registry** lists every recipe in `registry/`: version, architecture, targets and which targets
have been built (`build/<name>/<name>-<target>.build.json`). **enter** opens one.

**Recipe** shows one target's Plan — the GGML type of every tensor, the rule that chose it and
the exact file size — and lets you change it.

| key | what it does |
|---|---|
| `t` / `[` `]` | choose the target / previous, next target |
| `1` `2` `3` | tensor table, layer map, rules |
| `/` | filter: `ffn_*exps kind:ffn_down layer:3-5 type:iq2_xxs rule:targets fallback` |
| `s` / `S` | sort by the next column / reverse (or click a column header) |
| `space` `a` `x` | mark a tensor, mark every shown tensor, clear marks |
| `enter` | type picker for the marked tensors (or the one under the cursor) |
| `+` `-` | one step up / down the type ladder |
| `n` | edit the note of the rule that chose the tensor (on the Rules tab: that rule) |
| `d` | on the Rules tab: delete the rule |
| `u` / `ctrl+z`, `ctrl+y` | undo, redo |
| `ctrl+s` | save: shows the diff (as `dynq diff`), then writes canonical TOML atomically |
| `b` | build the target (the saved recipe) with per-tensor progress; `escape` cancels |
| `c` | compare targets: size, bpw, KLD, Pareto front; `T`: check the chat template |
| `escape` / `q` | back (asks first when there are unsaved changes) |
| `?` / `f1` | this help; `ctrl+q` quits |

A change of type becomes a rule of the target: for **exactly the chosen tensors**
(`match = "blk.*.ffn_down.weight", layers = "3-5"`), for their **kind in every layer**, or for
their kind in **a layer range**. A rule that fails planning is not applied; its one-line error
shows where you made it. Changed tensors are highlighted until you save.

**Layer map**: rows are tensor kinds, columns layers, each cell the type's whole bits, coloured
from red (1–2 bits) to blue (8) and purple (16+); `*` marks a llama.cpp fallback. Arrows move,
`enter` opens the type picker for the tensor under the cursor.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close")
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
