"""The chat-template check of the open recipe, for the TUI: ``dynq.templates.check_recipe`` run
without raising, its result keyed by the recipe, and a one-line headline. No Textual.

The check is what ``dynq template check RECIPE`` runs: the recipe's replacement template
(``model.chat_template``) or, without one, the source GGUF's own when it is on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynq.errors import DynqError
from dynq.recipe import LoadedRecipe

if TYPE_CHECKING:  # dynq.templates (jinja2) is imported by the check, in its worker
    from dynq.templates import TemplateReport

Key = tuple[str, str]  # (recipe file, recipe sha256)


def check_key(loaded: LoadedRecipe) -> Key:
    """What a result is cached under: the recipe file and its canonical sha256."""
    return (str(loaded.path.resolve()), loaded.sha256)


@dataclass(frozen=True)
class TemplateResult:
    """One run of the check. ``complete`` False: there was no template to check (the source
    GGUF is not on this machine and the recipe has no ``model.chat_template``); ``error``: the
    check itself failed (a missing template file, a sha256 mismatch, …), as one line."""

    key: Key
    reports: tuple[TemplateReport, ...] = ()
    complete: bool = True
    error: str | None = None
    seconds: float = 0.0
    source: str | None = None  # model.source, for the "nothing to check" message

    @property
    def n_errors(self) -> int:
        return sum(len(r.errors) for r in self.reports)

    @property
    def n_warnings(self) -> int:
        return sum(len(r.warnings) for r in self.reports)

    @property
    def ok(self) -> bool:
        return self.error is None and self.complete and self.n_errors == 0

    @property
    def notable(self) -> bool:
        """Worth a look: the check failed, or found errors or warnings."""
        return self.error is not None or bool(self.n_errors or self.n_warnings)

    @property
    def cacheable(self) -> bool:
        """Only complete, successful checks are kept: a missing source may be downloaded and
        a bad template file fixed without the recipe changing."""
        return self.error is None and self.complete

    def headline(self) -> str:
        if self.error is not None:
            return f"template check failed: {self.error}"
        if not self.complete:
            return (
                f"nothing to check: model.source {self.source} is not on this machine and the "
                "recipe has no model.chat_template (download the source, or give the recipe "
                "a model.chat_template)"
            )
        if not self.reports:
            return "nothing to check"
        renders = sum(r.conversations for r in self.reports)
        engines = ", ".join(dict.fromkeys(e for r in self.reports for e in r.engines))
        counts = (
            f"{_plural(self.n_errors, 'error')}, {_plural(self.n_warnings, 'warning')} "
            f"({renders} renders; engines {engines})"
        )
        if self.n_errors:
            return f"✗ template FAILED: {counts}"
        if self.n_warnings:
            return f"! template OK with warnings: {counts}"
        infos = sum(1 for r in self.reports for f in r.findings if f.severity == "info")
        what = "no findings" if not infos else f"{_plural(infos, 'note')}, no errors or warnings"
        return f"✓ template OK: {what} ({renders} renders; engines {engines})"

    def short(self) -> str:
        """A few words for the status line."""
        if self.error is not None:
            return f"chat template: check failed: {self.error}"
        return (
            f"chat template: {_plural(self.n_errors, 'error')}, "
            f"{_plural(self.n_warnings, 'warning')}"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _one_line(msg: str, limit: int = 300) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def run_check(loaded: LoadedRecipe) -> TemplateResult:
    """Check the template a build of ``loaded`` would ship. Never raises: a failure of the
    check is the result's ``error``, one line."""
    key = check_key(loaded)
    source = loaded.recipe.model.source
    t0 = time.perf_counter()
    try:
        from dynq.templates import check_recipe

        reports, complete = check_recipe(loaded)
    except DynqError as e:
        return TemplateResult(key, error=_one_line(str(e)), source=source)
    except Exception as e:  # a bug in the check must not take the TUI down
        return TemplateResult(key, error=_one_line(f"{type(e).__name__}: {e}"), source=source)
    return TemplateResult(
        key, tuple(reports), complete, None, time.perf_counter() - t0, source=source
    )
