"""The result of checking a chat template: findings and render errors, as data and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem in a template. ``engine`` is ``"jinja"`` (llama.cpp common/jinja),
    ``"minja"`` (google/minja), or None when it holds for every engine (e.g. a double BOS)."""

    severity: str  # "error" | "warning" | "info"
    line: int | None
    col: int | None
    engine: str | None
    message: str
    suggestion: str | None = None
    code: str = ""

    def format(self, name: str = "template") -> str:
        where = name
        if self.line is not None:
            where += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        eng = f" [{self.engine}]" if self.engine else ""
        hint = f" (suggest: {self.suggestion})" if self.suggestion else ""
        return f"{where}: {self.severity}{eng}: {self.message}{hint}"


@dataclass(frozen=True)
class RenderError:
    """A conversation the template failed to render (under full Jinja, in the sandbox)."""

    conversation: str
    message: str
    severity: str = "error"  # "warning" when the template itself refused (raise_exception)

    def format(self, name: str = "template") -> str:
        return f"{name}: {self.severity}: conversation '{self.conversation}': {self.message}"


@dataclass
class TemplateReport:
    """Everything ``check_template`` found. ``renders`` maps conversation names to the text
    the template produced under full Jinja (not part of ``to_json``)."""

    name: str
    engines: list[str]
    sha256: str
    findings: list[Finding] = field(default_factory=list)
    render_errors: list[RenderError] = field(default_factory=list)
    renders: dict[str, str] = field(default_factory=dict, repr=False)
    conversations: int = 0

    @property
    def errors(self) -> list[Finding | RenderError]:
        return [x for x in (*self.findings, *self.render_errors) if x.severity == "error"]

    @property
    def warnings(self) -> list[Finding | RenderError]:
        return [x for x in (*self.findings, *self.render_errors) if x.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self, *, infos: bool = True) -> list[str]:
        """One line per finding, and per distinct render error (naming its first conversation
        and how many others failed the same way)."""
        return [text for _, text in self.entries(infos=infos)]

    def entries(self, *, infos: bool = True) -> list[tuple[str, str]]:
        """``lines()`` with each line's severity."""
        out = [
            (f.severity, f.format(self.name))
            for f in self.findings
            if infos or f.severity != "info"
        ]
        groups: dict[tuple[str, str], list[RenderError]] = {}
        for r in self.render_errors:
            groups.setdefault((r.severity, r.message), []).append(r)
        for (severity, message), rs in groups.items():
            more = f" (and {len(rs) - 1} more)" if len(rs) > 1 else ""
            text = f"{self.name}: {severity}: conversation '{rs[0].conversation}'{more}: {message}"
            out.append((severity, text))
        return out

    def summary(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        state = "ok" if self.ok else "FAILED"
        return (
            f"{state} {self.name}: {self.conversations} renders, {n_err} error(s), "
            f"{n_warn} warning(s) [{', '.join(self.engines)}]"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "engines": self.engines,
            "ok": self.ok,
            "conversations": self.conversations,
            "findings": [asdict(f) for f in self.findings],
            "render_errors": [asdict(r) for r in self.render_errors],
        }
