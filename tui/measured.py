"""The measured sensitivity of a recipe's tensors as a layer × kind heat map, no Textual.

``dynq measure`` writes ``<recipe dir>/measurements/<name>.json``: per group of tensors the
predicted KLD increase of every type measured. Each cell here is a tensor's predicted cost at
the type its target plans for it; when that type was not measured, the cost at the measured type
with the fewest bits not below the planned type's (or, above them all, the most bits).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dynq import qtypes
from dynq.errors import DynqError
from dynq.measure import measurement_path
from dynq.plan import Plan
from dynq.recipe import LoadedRecipe
from dynq.tune import Measurement, load_measurement

#: background colours of the shades, cheapest first (log scale between the map's min and max)
SHADES = ("green4", "chartreuse3", "yellow3", "dark_orange3", "red3")
SHADE_TEXT = ("white", "black", "black", "black", "white")

#: the stock mixes offered as budgets (those llama.cpp knows; see dynq.stock.MIXES)
LIKE_MIXES = ("Q2_K", "Q3_K_M", "IQ4_XS", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


@dataclass(frozen=True)
class Cell:
    name: str
    kind: str
    layer: int | None
    planned: str  # the type the Plan stores the tensor as
    costed: str  # the measured type whose cost is shown
    cost: float


@dataclass
class HeatMap:
    target: str
    kinds: list[str]
    layers: list[int | None]  # None: tensors outside the layers (token_embd, output)
    cells: dict[tuple[str, int | None], Cell]
    spearman: float | None = None
    pairs: int | None = None
    method: str = ""
    unmeasured: list[str] = field(default_factory=list)  # planned tensors without a cost

    @property
    def total(self) -> float:
        return sum(c.cost for c in self.cells.values())

    @property
    def range(self) -> tuple[float, float]:
        pos = [c.cost for c in self.cells.values() if c.cost > 0]
        return (min(pos), max(pos)) if pos else (0.0, 0.0)

    def shade(self, cost: float) -> int:
        """0 (cheapest) .. len(SHADES)-1, on a log scale between the map's min and max."""
        lo, hi = self.range
        if cost <= 0 or lo <= 0 or hi <= lo:
            return 0
        x = (math.log(cost) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return max(0, min(len(SHADES) - 1, int(x * len(SHADES))))

    def legend(self) -> list[tuple[int, str]]:
        """(shade, "lo–hi") for each shade."""
        lo, hi = self.range
        if lo <= 0 or hi <= lo:
            return [(0, f"{short(hi)}")]
        n = len(SHADES)
        bounds = [lo * (hi / lo) ** (i / n) for i in range(n + 1)]
        return [(i, f"{short(bounds[i])}–{short(bounds[i + 1])}") for i in range(n)]


def short(x: float) -> str:
    """A cost in at most 5 characters: ``3e-4``, ``1e0``, ``0``."""
    if x <= 0 or not math.isfinite(x):
        return "0"
    e = math.floor(math.log10(x))
    m = round(x / 10**e)
    if m == 10:
        m, e = 1, e + 1
    return f"{m}e{e}"


def cost_at(costs: dict[str, float], planned: qtypes.GGMLType) -> tuple[str, float] | None:
    """The cost of ``planned``, else of the fewest-bits measured type with at least its bits
    (above every measured type: the most bits measured)."""
    if not costs:
        return None
    if planned.name in costs:
        return planned.name, costs[planned.name]
    known = []
    for name, c in costs.items():
        try:
            known.append((qtypes.get(name).bpw, name, c))
        except DynqError:
            continue
    if not known:
        return None
    above = [k for k in known if k[0] >= planned.bpw - 1e-9]
    _bpw, name, c = min(above) if above else max(known)
    return name, c


def find_measurement(loaded: LoadedRecipe) -> Path | None:
    path = measurement_path(loaded)
    return path if path.is_file() else None


def load(loaded: LoadedRecipe) -> tuple[Measurement, dict]:
    """The recipe's measurement (checked as ``dynq tune`` does) and its raw JSON; DynqError
    (one line) when it cannot be used."""
    path = measurement_path(loaded)
    meas = load_measurement(path, loaded.recipe.name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # read just above: only a race gets here
        raise DynqError(f"{path}: {e}") from None
    return meas, raw


def heat_map(plan: Plan, target: str, meas: Measurement, raw: dict) -> HeatMap:
    costs: dict[str, dict[str, float]] = {}
    for g in meas.groups:
        for t in g.tensors:
            costs[t] = g.costs
    kinds: list[str] = []
    layers: set[int | None] = set()
    cells: dict[tuple[str, int | None], Cell] = {}
    unmeasured: list[str] = []
    for t in plan.tensors:
        if t.name not in costs:
            if t.type.is_quantized:
                unmeasured.append(t.name)
            continue
        got = cost_at(costs[t.name], t.type)
        if got is None:
            unmeasured.append(t.name)
            continue
        kind = t.kind.removesuffix(".weight")
        if kind not in kinds:
            kinds.append(kind)
        layers.add(t.layer)
        cells[(kind, t.layer)] = Cell(t.name, kind, t.layer, t.type.name, got[0], got[1])
    faith = raw.get("faithfulness") if isinstance(raw.get("faithfulness"), dict) else {}
    sp = faith.get("spearman")
    pairs = faith.get("pairs")
    return HeatMap(
        target,
        kinds,
        sorted(layers, key=lambda x: (x is None, x if x is not None else 0)),
        cells,
        float(sp) if isinstance(sp, int | float) and not isinstance(sp, bool) else None,
        int(pairs) if isinstance(pairs, int) and not isinstance(pairs, bool) else None,
        meas.method,
        unmeasured,
    )
