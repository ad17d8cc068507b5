"""Messages between widgets and screens: small dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from tui.template import TemplateResult


@dataclass
class MapCellChosen(Message):
    """The layer map's cursor chose a tensor (enter or click)."""

    name: str


@dataclass
class MapCursorMoved(Message):
    """The layer map's cursor is on tensor ``name`` (None: an empty cell)."""

    name: str | None


@dataclass
class BuildProgress(Message):
    target: str
    tensors_done: int
    bytes_done: int
    total: int


@dataclass
class BuildFinished(Message):
    target: str
    ok: bool
    message: str


@dataclass
class TemplateChecked(Message):
    """The template check of the open recipe finished (a ``tui.template.TemplateResult``)."""

    result: TemplateResult
