"""The template check of the open recipe: every finding with its severity, line:column, engines,
message and suggested rewrite (as ``dynq template check`` reports them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui.template import TemplateResult

if TYPE_CHECKING:
    from dynq.templates import TemplateReport

SEVERITY_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "cyan"}
SEVERITY_MARK = {"error": "✗", "warning": "!", "info": "i"}


def _short(name: str) -> str:
    """A report's name (a file, maybe with ``[key]``) relative to the current folder."""
    try:
        return str(Path(name).relative_to(Path.cwd()))
    except ValueError:
        return name


def _where(line: int | None, col: int | None) -> str:
    if line is None:
        return ""
    return f"{line}:{col}" if col is not None else f"{line}"


def _entry(
    severity: str, where: str, engines: str, code: str, message: str, suggestion: str | None
) -> tuple[RenderableType, str]:
    """One finding as a grid (wrapped lines keep their indent) and as one plain line."""
    style = SEVERITY_STYLE.get(severity, "")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=9, no_wrap=True)
    grid.add_column(ratio=1)
    head = Text()
    for part, part_style in ((where, "bold"), (engines, "magenta"), (code, "dim")):
        if part:
            head.append(" · " if head else "", style="dim")
            head.append(part, style=part_style)
    grid.add_row(Text(f"{SEVERITY_MARK.get(severity, '?')} {severity}", style=style), head)
    grid.add_row("", Text(message))
    if suggestion:
        grid.add_row(Text("  suggest", style="green"), Text(suggestion))
    plain = " · ".join(x for x in (severity, where, engines, code) if x) + f": {message}"
    if suggestion:
        plain += f" (suggest: {suggestion})"
    return grid, plain


def render_report(
    rep: TemplateReport, counts: bool = True
) -> tuple[list[RenderableType], list[str]]:
    """One report: its name (and counts), then each finding and each distinct render error,
    errors first; as renderables and as plain lines."""
    head = Text(_short(rep.name), style="bold")
    if counts:
        state = "ok" if rep.ok else "FAILED"
        head.append(
            f"  {state}: {rep.conversations} renders, {len(rep.errors)} error(s), "
            f"{len(rep.warnings)} warning(s)",
            style="dim",
        )
    out: list[RenderableType] = [head]
    plain = [head.plain]
    if not rep.findings and not rep.render_errors:
        out.append(Text("no findings", style="green"))
        plain.append("no findings")
        return out, plain
    order = {s: i for i, s in enumerate(SEVERITY_STYLE)}
    entries = [
        (
            f.severity,
            _where(f.line, f.col),
            f.engine or "all engines",
            f.code,
            f.message,
            f.suggestion,
        )
        for f in rep.findings
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rep.render_errors:
        groups.setdefault((r.severity, r.message), []).append(r.conversation)
    for (severity, message), convs in groups.items():
        more = f" (and {len(convs) - 1} more)" if len(convs) > 1 else ""
        where = f"conversation '{convs[0]}'{more}"
        entries.append((severity, where, "sandbox render", "", message, None))
    for e in sorted(entries, key=lambda e: order.get(e[0], 9)):
        grid, line = _entry(*e)
        out.append(grid)
        plain.append(line)
    return out, plain


def render_result(result: TemplateResult | None) -> tuple[Text, list[RenderableType], str]:
    """(headline, body, body as plain text) for a result; None: the check is running."""
    if result is None:
        return Text("checking the chat template…", style="dim"), [], ""
    head = result.headline()
    if result.error is not None:
        return Text(head, style="bold red"), [], ""
    if not result.complete:
        return Text(head, style="yellow"), [], ""
    style = "bold red" if result.n_errors else "bold yellow" if result.n_warnings else "bold green"
    body: list[RenderableType] = []
    plain: list[str] = []
    for i, rep in enumerate(result.reports):
        if i:
            body.append(Text(""))
        parts, lines = render_report(rep, counts=len(result.reports) > 1)
        body += parts
        plain += lines
    return Text(head, style=style), body, "\n".join(plain)


class TemplateScreen(ModalScreen[None]):
    """Shows a recipe's template check; ``recheck`` runs it again (the screen is told the new
    result through ``show``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,T", "close", "Close"),
        Binding("r", "recheck", "Re-check"),
    ]

    def __init__(
        self, title: str, result: TemplateResult | None, recheck: Callable[[], None]
    ) -> None:
        super().__init__()
        self.title_text = title
        self.result = result
        self.recheck = recheck
        self.headline = ""  # what is shown, as plain text (for tests)
        self.plain = ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog template"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static("", id="template-headline")
            with VerticalScroll(id="template-scroll"):
                yield Static("", id="template-findings")
            with Horizontal(classes="buttons"):
                yield Button("Re-check (r)", id="recheck", compact=True)
                yield Button("Close (esc)", id="close", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.show(self.result)
        self.query_one("#template-scroll").focus()

    def show(self, result: TemplateResult | None) -> None:
        self.result = result
        head, body, self.plain = render_result(result)
        self.headline = head.plain
        try:
            self.query_one("#template-headline", Static).update(head)
            self.query_one("#template-findings", Static).update(Group(*body))
            self.query_one("#template-scroll").display = bool(body)
        except NoMatches:  # not composed yet: on_mount shows self.result
            pass

    def action_recheck(self) -> None:
        self.show(None)
        self.recheck()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#recheck")
    def recheck_pressed(self) -> None:
        self.action_recheck()

    @on(Button.Pressed, "#close")
    def close_pressed(self) -> None:
        self.action_close()
