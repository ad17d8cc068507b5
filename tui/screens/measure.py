"""Measured sensitivity: a layer × kind heat map of each tensor's predicted KLD increase at its
planned type (``dynq measure``'s output), and tuning the target to a budget (``dynq tune``),
shown as a recipe diff before it is written."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, ScrollableContainer, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from dynq.errors import DynqError
from tui import measured
from tui.measured import SHADE_TEXT, SHADES, HeatMap, short

if TYPE_CHECKING:
    from dynq.tune import TuneResult
    from tui.screens.recipe import RecipeScreen


def render_heat(hm: HeatMap) -> Text:
    """The grid: a header of layers, then one row per kind; each cell its cost, shaded."""
    kw = max([len("kind")] + [len(k) for k in hm.kinds]) + 1
    out = Text()
    out.append("kind".ljust(kw), style="bold")
    for layer in hm.layers:
        out.append(f"{'·' if layer is None else layer:>5}", style="bold")
    out.append("\n")
    for kind in hm.kinds:
        out.append(kind.ljust(kw))
        for layer in hm.layers:
            cell = hm.cells.get((kind, layer))
            if cell is None:
                out.append("    ·", style="dim")
                continue
            s = hm.shade(cell.cost)
            out.append(" ")
            out.append(f"{short(cell.cost):>4}", style=f"{SHADE_TEXT[s]} on {SHADES[s]}")
        out.append("\n")
    return out


def render_legend(hm: HeatMap) -> Text:
    out = Text("predicted KLD increase (nats/token), log scale: ", style="dim")
    for i, label in hm.legend():
        out.append("  ")
        out.append("  ", style=f"on {SHADES[i]}")
        out.append(f" {label}")
    return out


def render_diff(text: str) -> Text:
    """``dynq diff``'s text, coloured as the save dialog does."""
    out = Text()
    for line in text.splitlines():
        body = line.lstrip()
        style = ""
        if line.startswith("warning"):
            style = "bold yellow"
        elif body.startswith("+"):
            style = "green"
        elif body.startswith("-"):
            style = "red"
        elif body.startswith("~"):
            style = "yellow"
        elif line.startswith("target"):
            style = "bold"
        out.append(line + "\n", style=style)
    return out


class MeasureScreen(ModalScreen[None]):
    """The heat map of the recipe screen's target; ``t`` tunes the target to a budget."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,M", "close", "Close"),
        Binding("t", "tune", "Tune to budget"),
    ]

    def __init__(self, recipe_screen: RecipeScreen) -> None:
        super().__init__()
        self.recipe_screen = recipe_screen
        self.heat: HeatMap | None = None
        self.error: str | None = None
        self.result: TuneResult | None = None
        self._busy = False

    @property
    def editor(self):
        return self.recipe_screen.editor

    @property
    def target(self) -> str:
        return self.recipe_screen.target

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog measure"):
            yield Static("", id="heat-title", classes="dialog-title", markup=False)
            yield Static("", id="heat-info")
            with ScrollableContainer(id="heat-scroll"):
                yield Static("", id="heat-grid")
            yield Static("", id="heat-legend")
            yield Static("", id="heat-status")
            yield Static(
                Text("t: tune the target to a budget · escape: close", style="dim"),
                id="heat-keys",
            )

    def on_mount(self) -> None:
        self.show()

    def status(self, msg: str, style: str = "") -> None:
        self.query_one("#heat-status", Static).update(Text(msg, style=style))

    def show(self) -> None:
        """(Re)draw from the recipe screen's working copy and the measurement on disk."""
        r = self.editor.recipe
        self.query_one("#heat-title", Static).update(
            f"Measured sensitivity · {r.name} {r.version} · target {self.target}"
        )
        self.heat, self.error = None, None
        loaded = self.editor.saved
        grid, legend, info = Text(""), Text(""), Text("")
        if measured.find_measurement(loaded) is None:
            rel = _rel(self.editor.path)
            self.error = f"no measurement: run `dynq measure {rel}` first"
            info = Text(self.error, style="yellow")
        else:
            try:
                meas, raw = measured.load(loaded)
                plan = self.editor.plan(self.target)
                self.heat = hm = measured.heat_map(plan, self.target, meas, raw)
            except DynqError as e:
                self.error = str(e)
                info = Text(self.error, style="bold red")
            else:
                sp = f"{hm.spearman:.3f}" if hm.spearman is not None else "—"
                pairs = f" over {hm.pairs} pairs" if hm.pairs is not None else ""
                info = Text.assemble(
                    ("faithfulness: Spearman ", "dim"),
                    (sp, "bold"),
                    (pairs, "dim"),
                    ("  ·  predicted KLD at the planned types ", "dim"),
                    (f"{hm.total:.4g}", "bold"),
                    (f" over {len(hm.cells)} tensors", "dim"),
                )
                if hm.unmeasured:
                    info.append(f"  ·  {len(hm.unmeasured)} not measured", style="yellow")
                grid = render_heat(hm)
                legend = render_legend(hm)
        self.query_one("#heat-info", Static).update(info)
        self.query_one("#heat-grid", Static).update(grid)
        self.query_one("#heat-legend", Static).update(legend)

    def action_close(self) -> None:
        self.dismiss(None)

    # -- tuning ----------------------------------------------------------------------------
    def action_tune(self) -> None:
        if self._busy:
            return
        if self.heat is None:
            self.status(self.error or "no measurement", "bold red")
            self.app.bell()
            return
        if self.editor.dirty:
            self.status("save first (ctrl+s): tuning starts from the recipe as saved", "bold red")
            return

        def chosen(budget: tuple[str, str] | None) -> None:
            if budget is not None:
                self._busy = True
                self.status(f"tuning {self.target} to {budget[1]}…", "yellow")
                self.run_tune(budget)

        self.app.push_screen(BudgetScreen(self.target), chosen)

    @work(thread=True, exclusive=True, group="tune")
    def run_tune(self, budget: tuple[str, str]) -> None:
        from dynq import tune as tn
        from dynq.diff import diff_recipes, render_text

        loaded, target = self.editor.saved, self.target
        try:
            kind, value = budget
            if kind == "like":
                b = tn.like_budget(loaded, target, value)
            else:
                b = tn.size_budget(value)
            meas = tn.load_measurement(tn.default_measurement_path(loaded), loaded.recipe.name)
            res = tn.tune(loaded, target, b, meas)
            text = render_text(diff_recipes(loaded, res.new))
        except DynqError as e:
            self.app.call_from_thread(self._tune_failed, str(e))
            return
        self.app.call_from_thread(self._tuned, res, text)

    def _tune_failed(self, msg: str) -> None:
        self._busy = False
        if not self.is_mounted:  # closed meanwhile
            return
        self.status(msg, "bold red")

    def _tuned(self, res: TuneResult, text: str) -> None:
        from dynq import tune as tn

        self._busy = False
        if not self.is_mounted:  # closed meanwhile: nothing is written unasked
            return
        self.result = res
        plan = res.plan
        summary = (
            f"{'create' if res.created else 'tune'} target {res.target}: {plan.file_size:,} "
            f"bytes, {plan.bpw:.4f} bpw; budget {res.budget.describe()}\n"
            f"predicted KLD {res.predicted_kld:.6g} over {res.groups} groups; "
            f"{tn.optimality(res.solution)}; {res.rules} rule(s)"
        )
        for w in res.warnings:
            summary += f"\nwarning: {w}"
        self.status("")

        def answer(apply: bool | None) -> None:
            if apply:
                self.apply(res)
            else:
                self.status("not applied: the recipe is unchanged", "dim")

        self.app.push_screen(TuneDiffScreen(f"Tune {res.target}?", summary, text), answer)

    def apply(self, res: TuneResult) -> None:
        from dynq import tune as tn

        try:
            self.editor.check_save()  # changed on disk since it was opened, comments
            tn.write_result(res)
        except (DynqError, OSError) as e:
            self.status(f"not written: {e}", "bold red")
            return
        self.recipe_screen.reload()
        self.show()
        self.status(f"✓ tuned {res.target}: wrote {_rel(self.editor.path)}", "bold green")
        self.recipe_screen.status(f"tuned {res.target}: wrote {self.editor.path}", "bold green")


def _rel(path) -> str:
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class BudgetScreen(ModalScreen[tuple[str, str] | None]):
    """A budget for ``dynq tune``: a stock mix (``--like``) or a size; dismisses with
    ("like", "llama.cpp:MIX") or ("size", "95MB"), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def compose(self) -> ComposeResult:
        from dynq import stock

        mixes = [m for m in measured.LIKE_MIXES if m in stock.MIXES]
        with Vertical(classes="dialog picker budget"):
            yield Static(f"Tune {self.target} to a budget", classes="dialog-title", markup=False)
            yield Static("no larger than the llama.cpp mix (enter), or a size:", markup=False)
            yield OptionList(*[Option(f"llama.cpp:{m}", id=m) for m in mixes], id="mixes")
            with Horizontal(classes="field"):
                yield Static("size", classes="label")
                yield Input(placeholder="e.g. 95MB, 1.5GiB", id="size", compact=True)
            yield Static("", id="budget-error", classes="error")

    def on_mount(self) -> None:
        ol = self.query_one("#mixes", OptionList)
        ol.highlighted = 0
        ol.focus()

    @on(OptionList.OptionSelected, "#mixes")
    def mix_chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(("like", f"llama.cpp:{event.option.id}"))

    @on(Input.Submitted, "#size")
    def size_given(self, event: Input.Submitted) -> None:
        from dynq.tune import parse_size

        event.stop()
        try:
            parse_size(event.value)
        except DynqError as e:
            self.query_one("#budget-error", Static).update(Text(str(e), style="bold red"))
            return
        self.dismiss(("size", event.value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class TuneDiffScreen(ModalScreen[bool]):
    """The tuned recipe's diff; ``y`` applies (dismisses True), ``n``/escape does not."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Apply"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, title: str, summary: str, diff: str) -> None:
        super().__init__()
        self.title_text = title
        self.summary = summary
        self.diff = diff

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog save tune-diff"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(Text(self.summary, style="dim"), id="tune-summary")
            with VerticalScroll(id="diff-scroll"):
                yield Static(render_diff(self.diff), id="tune-diff")
            with Horizontal(classes="buttons"):
                yield Button("Apply (y)", id="apply", variant="primary", compact=True)
                yield Button("Cancel (n)", id="cancel", compact=True)

    def action_answer(self, apply: bool) -> None:
        self.dismiss(apply)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "apply")
