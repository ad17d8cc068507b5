"""View models without Textual: table rows, the filter language, sorting, the layer map, the
registry listing and the compare table. The widgets only render what these return.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dynq.errors import DynqError
from dynq.plan import Plan, PlannedTensor
from dynq.recipe import LoadedRecipe, load_recipe, parse_layers

# -- tensor table --------------------------------------------------------------------------

COLUMNS: list[tuple[str, str]] = [
    ("name", "tensor"),
    ("type", "type"),
    ("bpw", "bpw"),
    ("mb", "MB"),
    ("imp", "importance"),
    ("rule", "rule"),
    ("note", "note"),
    ("layer", "layer"),
    ("kind", "kind"),
    ("shape", "shape"),
    ("params", "params"),
]
NUMERIC = {"layer", "params", "bpw", "mb", "imp"}


def short_kind(kind: str) -> str:
    return kind.removesuffix(".weight")


def fmt_params(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def fmt_size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:,.2f} MB"
    return f"{n / 1e3:,.1f} kB"


def fmt_mb(n: int) -> str:
    mb = n / 1e6
    return f"{mb:,.0f}" if mb >= 100 else f"{mb:.2f}"


def sort_key(column: str, importance: dict[str, float] | None) -> Callable[[PlannedTensor], object]:
    """Sort key of a column (numbers as numbers; tensors without a layer first)."""
    if column == "layer":
        return lambda t: (-1 if t.layer is None else t.layer, t.name)
    if column == "params":
        return lambda t: t.n_elements
    if column == "bpw":
        return lambda t: t.bpw
    if column == "mb":
        return lambda t: t.bytes
    if column == "type":
        return lambda t: (t.type.bpw, t.type.name)
    if column == "imp":
        imp = importance or {}
        return lambda t: imp.get(t.name, -1.0)
    if column == "kind":
        return lambda t: (t.kind, -1 if t.layer is None else t.layer)
    if column == "rule":
        return lambda t: (t.rule, t.name)
    if column == "note":
        return lambda t: t.note or ""
    if column == "shape":
        return lambda t: t.shape
    return lambda t: t.name


# -- filter --------------------------------------------------------------------------------


class FilterError(ValueError):
    pass


FILTER_HELP = (
    "words: name glob or substring; kind:ffn_down  layer:0-3,58  type:q4_k,q5_k  "
    "rule:targets  fallback"
)


@dataclass(frozen=True)
class Filter:
    """A parsed filter: every term must hold."""

    text: str = ""
    names: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    layers: frozenset[int] | None = None
    types: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    fallback: bool = False

    @property
    def empty(self) -> bool:
        return not self.text.strip()

    def __call__(self, t: PlannedTensor) -> bool:
        if self.layers is not None and (t.layer is None or t.layer not in self.layers):
            return False
        if self.kinds and not any(_like(short_kind(t.kind), k) for k in self.kinds):
            return False
        if self.types and t.type.key not in self.types:
            return False
        if self.rules and not any(
            r in t.rule.lower() or (r == "stock" and t.rule.startswith("llama.cpp:"))
            for r in self.rules
        ):
            return False
        if self.fallback and t.fallback_from is None:
            return False
        return all(_like(t.name, n) for n in self.names)


def _like(value: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):  # a glob anywhere in the name
        return fnmatch.fnmatchcase(value, pattern) or fnmatch.fnmatchcase(value, f"*{pattern}*")
    return pattern in value


def parse_filter(text: str) -> Filter:
    """Parse the filter box: ``ffn_*exps layer:3-5 type:iq2_xxs kind:ffn_down fallback``."""
    names: list[str] = []
    kinds: list[str] = []
    types: list[str] = []
    rules: list[str] = []
    layers: set[int] | None = None
    fallback = False
    for word in text.split():
        key, sep, value = word.partition(":")
        key = key.lower()
        if not sep:
            if word.lower() in ("fallback", "fallbacks", "*fallback"):
                fallback = True
            else:
                names.append(word)
            continue
        if not value:
            raise FilterError(f"'{word}': nothing after ':'")
        if key in ("k", "kind"):
            kinds += [short_kind(v) for v in value.split(",") if v]
        elif key in ("l", "layer", "layers"):
            try:
                got = set(parse_layers(value))
            except ValueError as e:
                raise FilterError(str(e)) from None
            layers = got if layers is None else layers & got
        elif key in ("t", "type", "types"):
            types += [v.lower() for v in value.split(",") if v]
        elif key in ("r", "rule"):
            rules.append(value.lower())
        else:
            raise FilterError(f"unknown filter '{key}:' (use kind:, layer:, type:, rule:)")
    return Filter(
        text,
        tuple(names),
        tuple(kinds),
        frozenset(layers) if layers is not None else None,
        tuple(types),
        tuple(rules),
        fallback,
    )


# -- summary -------------------------------------------------------------------------------


@dataclass
class Summary:
    size: int
    bpw: float
    tensors: int
    fallbacks: int
    histogram: list[tuple[str, int, int, float]]  # (type, count, bytes, share)
    size_delta: int | None
    bpw_delta: float | None


def summarize(plan: Plan, saved: Plan | None) -> Summary:
    total = plan.tensor_bytes or 1
    hist = [(k, c, b, b / total) for k, (c, b) in plan.type_histogram().items()]
    return Summary(
        size=plan.file_size,
        bpw=plan.bpw,
        tensors=len(plan.tensors),
        fallbacks=len(plan.fallbacks),
        histogram=hist,
        size_delta=plan.file_size - saved.file_size if saved is not None else None,
        bpw_delta=plan.bpw - saved.bpw if saved is not None else None,
    )


# -- layer map -----------------------------------------------------------------------------


@dataclass
class LayerMap:
    kinds: list[str]  # rows
    n_layers: int  # columns
    cells: dict[tuple[str, int], PlannedTensor]
    other: list[PlannedTensor]  # quantized tensors outside the layers (embedding, output)


def layer_map(plan: Plan) -> LayerMap:
    kinds: list[str] = []
    cells: dict[tuple[str, int], PlannedTensor] = {}
    other: list[PlannedTensor] = []
    n = 0
    for t in plan.tensors:
        if t.layer is None:
            if t.rule != "not quantized":
                other.append(t)
            continue
        n = max(n, t.layer + 1)
        if t.rule == "not quantized":
            continue
        if t.kind not in kinds:
            kinds.append(t.kind)
        cells[(t.kind, t.layer)] = t
    return LayerMap(kinds, n, cells, other)


# (upper bpw bound, colour, label): one colour per ~bit class
BIT_CLASSES: list[tuple[float, str, str]] = [
    (1.9, "#8b0000", "<2"),
    (2.7, "#d7301f", "2"),
    (3.6, "#fc8d59", "3"),
    (4.6, "#fee08b", "4"),
    (5.6, "#91cf60", "5"),
    (6.7, "#1a9850", "6"),
    (8.6, "#3288bd", "8"),
    (math.inf, "#5e4fa2", "16+"),
]


def bit_class(bpw: float) -> tuple[str, str]:
    for bound, colour, label in BIT_CLASSES:
        if bpw < bound:
            return colour, label
    return BIT_CLASSES[-1][1], BIT_CLASSES[-1][2]


def bit_char(bpw: float) -> str:
    """One character for a cell: the whole bits (1-9), ``F`` for 16 and more."""
    return "F" if bpw >= 10 else str(int(bpw))


# -- registry ------------------------------------------------------------------------------


@dataclass
class BuildInfo:
    target: str
    file_size: int
    seconds: float
    recipe_version: str
    mtime: float
    recipe_sha256: str = ""


@dataclass
class RecipeEntry:
    path: Path
    name: str
    loaded: LoadedRecipe | None = None
    error: str | None = None
    builds: list[BuildInfo] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.loaded.recipe.version if self.loaded else "—"

    @property
    def arch(self) -> str:
        return self.loaded.recipe.model.arch if self.loaded else "—"

    @property
    def targets(self) -> list[str]:
        return list(self.loaded.recipe.targets) if self.loaded else []

    @property
    def description(self) -> str:
        return self.loaded.recipe.description if self.loaded else (self.error or "")


def read_build_reports(build_root: Path, name: str, targets: list[str]) -> list[BuildInfo]:
    out: list[BuildInfo] = []
    for t in targets:
        p = build_root / name / f"{name}-{t}.build.json"
        try:
            data = json.loads(p.read_text())
            out.append(
                BuildInfo(
                    t,
                    int(data["file_size"]),
                    float(data.get("seconds", 0.0)),
                    str(data.get("recipe_version", "")),
                    p.stat().st_mtime,
                    str(data.get("recipe_sha256", "")),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def scan_registry(registry: Path, build_root: Path) -> list[RecipeEntry]:
    out: list[RecipeEntry] = []
    for p in sorted(registry.glob("*.toml")):
        e = RecipeEntry(p, p.stem)
        try:
            e.loaded = load_recipe(p)
        except DynqError as err:
            e.error = str(err)
        e.builds = read_build_reports(build_root, e.name, e.targets)
        out.append(e)
    return out


# -- compare -------------------------------------------------------------------------------

EVAL_KEYS = ("mean_kld", "p99_kld", "top1_agreement", "ppl")


def read_eval(build_root: Path, name: str, target: str) -> dict[str, float]:
    p = build_root / name / f"{name}-{target}.eval.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, float] = {}
    for k in EVAL_KEYS:
        v = data.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


@dataclass
class ComparePoint:
    target: str
    size: int
    bpw: float
    eval: dict[str, float]
    pareto: bool = False

    @property
    def kld(self) -> float | None:
        return self.eval.get("mean_kld")


def pareto_front(points: list[ComparePoint]) -> None:
    """Mark points no other point beats on both size and mean KLD (smaller is better)."""
    measured = [p for p in points if p.kld is not None]
    for p in measured:
        p.pareto = not any(
            q is not p
            and q.size <= p.size
            and q.kld <= p.kld  # type: ignore[operator]
            and (q.size < p.size or q.kld < p.kld)  # type: ignore[operator]
            for q in measured
        )


def fmt_eval(v: float | None, key: str) -> str:
    if v is None:
        return "—"
    if key == "top1_agreement":
        return f"{v * 100:.1f}%" if v <= 1 else f"{v:.1f}%"
    if key == "ppl":
        return f"{v:.3f}"
    return f"{v:.4f}"
