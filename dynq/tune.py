"""``dynq tune``: choose one type per tensor group to minimise predicted KLD under a size budget.

A measurement (``dynq measure``) gives, for each group of tensors (one tensor, or the experts of a
layer), the predicted KLD increase for every type the group can take. Tuning is then a
multiple-choice knapsack: pick one option per group, minimising the summed cost, subject to the
output being no larger than the budget — the Plan's exact file size (``--size``, ``--like``) or
its bits per weight (``--bpw``).

The file size is additive over tensors: ``layout.file_size`` pads the header once and every
tensor's data to the alignment, so each option's bytes are the sum of its tensors' padded bytes,
and everything outside the optimised groups is a constant taken from the Plan of the target's
skeleton (its base or stock mix, the shared rules and its pinned rules). The written target is
planned again and checked against the budget; should it not fit, the capacity is tightened by the
overshoot and the problem solved again.

The solver is Lagrangian relaxation: with a multiplier λ each group independently takes
``argmin cost + λ·bytes``; the multiplier is found exactly at the breakpoint where the total
first fits (a greedy walk along each group's lower convex hull of (bytes, cost), which is the LP
relaxation), then a fill step spends what capacity is left on the best remaining upgrades. The
dual value ``Σ_g min_o (c + λ·w) − λ·C`` is a lower bound on the optimum, so ``cost − bound`` is
a proven optimality gap, printed and written into the target's note.

The result replaces the target's non-pinned rules with compact ones: one rule per (tensor kind,
type) with a layer range list, and only where the type differs from what the target's skeleton
gives anyway.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from dynq import layout, qtypes, stock
from dynq.errors import DynqError, QuantTypeError
from dynq.inventory import TensorInfo
from dynq.plan import Plan, Resolver
from dynq.provenance import default_imatrix_ref
from dynq.recipe import (
    STOCK_PREFIX,
    LoadedRecipe,
    Recipe,
    Rule,
    Target,
    comment_line,
    dump_recipe,
    format_layers,
    parse_recipe,
    save_recipe,
)

MEASUREMENT_FORMAT = 1
NOTE_MARK = "dynq tune:"
_CREATED_BASE = "q8_0"  # skeleton of a new target while its base is being chosen
_MAX_ROUNDS = 8
NODE_LIMIT = 200_000  # branch and bound nodes before settling for the Lagrangian gap
_EPS = 1e-12


class TuneError(DynqError):
    """Tuning cannot run: no or mismatched measurement, an impossible budget or bound, …"""


# -- measurements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredGroup:
    """Tensors that take one type together, with the predicted KLD increase of each type."""

    name: str
    kind: str
    layer: int | None
    tensors: tuple[str, ...]
    costs: dict[str, float]


@dataclass
class Measurement:
    path: Path
    recipe: str
    key: str
    method: str
    groups: list[MeasuredGroup]


def default_measurement_path(loaded: LoadedRecipe) -> Path:
    """``<recipe dir>/measurements/<recipe name>.json``."""
    return loaded.dir / "measurements" / f"{loaded.recipe.name}.json"


def load_measurement(path: Path, recipe_name: str | None = None) -> Measurement:
    """Read and check a measurement file; every problem is one TuneError line naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuneError(
            f"{path}: measurement file not found (make one with dynq measure, or pass "
            "--measurement FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TuneError(f"{path}: cannot read measurement: {e}") from None
    except json.JSONDecodeError as e:
        raise TuneError(f"{path}: malformed JSON: {e}") from None

    def bad(msg: str) -> TuneError:
        return TuneError(f"{path}: {msg}")

    if not isinstance(data, dict):
        raise bad("a measurement is a JSON object")
    if data.get("format") != MEASUREMENT_FORMAT:
        raise bad(f"format {data.get('format')!r} is not {MEASUREMENT_FORMAT}")
    recipe = data.get("recipe")
    if not isinstance(recipe, str):
        raise bad("recipe: missing")
    if recipe_name is not None and recipe != recipe_name:
        raise bad(f"measurement is of recipe '{recipe}', not '{recipe_name}'")
    groups_data = data.get("groups")
    if not isinstance(groups_data, list) or not groups_data:
        raise bad("groups: none measured")
    groups: list[MeasuredGroup] = []
    seen: dict[str, str] = {}
    for i, g in enumerate(groups_data):
        where = f"groups[{i}]"
        if not isinstance(g, dict):
            raise bad(f"{where}: not an object")
        name, kind, layer = g.get("name"), g.get("kind"), g.get("layer")
        tensors, costs = g.get("tensors"), g.get("costs")
        if not isinstance(name, str) or not isinstance(kind, str):
            raise bad(f"{where}: name and kind must be strings")
        where = f"groups[{i}] ({name})"
        if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool)):
            raise bad(f"{where}: layer must be an integer or null")
        if (
            not isinstance(tensors, list)
            or not tensors
            or not all(isinstance(t, str) for t in tensors)
        ):
            raise bad(f"{where}: tensors must be a non-empty list of names")
        for t in tensors:
            if t in seen:
                raise bad(f"{where}: tensor '{t}' is also in group '{seen[t]}'")
            seen[t] = name
        if not isinstance(costs, dict) or not costs:
            raise bad(f"{where}: costs: none measured")
        clean: dict[str, float] = {}
        for tname, c in costs.items():
            try:
                qt = qtypes.parse_type(tname)
            except QuantTypeError as e:
                raise bad(f"{where}: costs: {e}") from None
            if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(float(c)):
                raise bad(f"{where}: costs.{tname}: not a finite number: {c!r}")
            clean[qt.name] = float(c)
        groups.append(MeasuredGroup(name, kind, layer, tuple(tensors), clean))
    key, method = data.get("key", ""), data.get("method", "")
    return Measurement(path, recipe, str(key), str(method), groups)


# -- budgets and bounds -----------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """``"1234"``, ``"95MB"``, ``"1.5 GiB"`` -> bytes (MB/GB decimal, MiB/GiB binary)."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise TuneError(
            f"--size {text!r}: expected bytes with an optional unit (B, KB, MB, GB, TB, KiB, "
            "MiB, GiB, TiB), e.g. 95MB"
        )
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise TuneError(f"--size {text!r}: must be positive")
    return n


@dataclass(frozen=True)
class Budget:
    """What the tuned target must not exceed: the Plan's file size, or its bits per weight."""

    label: str  # as given: "--size 95MB", "--bpw 4.5", "--like llama.cpp:Q4_K_M"
    file_size: int | None = None
    bpw: float | None = None

    def fits(self, plan: Plan) -> bool:
        if self.bpw is not None:
            return plan.bpw <= self.bpw
        assert self.file_size is not None
        return plan.file_size <= self.file_size

    def padded(self) -> bool:
        """Whether the bounded quantity is the file (padded tensor data) or raw tensor bytes."""
        return self.bpw is None

    def used(self, plan: Plan) -> int:
        return plan.file_size if self.padded() else plan.tensor_bytes

    def limit(self, plan: Plan) -> int:
        """The most bytes ``used`` may reach (for bpw: of tensor data, given the elements)."""
        if self.bpw is None:
            assert self.file_size is not None
            return self.file_size
        n = plan.n_elements
        b = math.floor(self.bpw * n / 8)
        while (b + 1) * 8 / n <= self.bpw:
            b += 1
        while b > 0 and b * 8 / n > self.bpw:
            b -= 1
        return b

    def describe(self) -> str:
        if self.bpw is not None:
            return f"at most {self.bpw:g} bpw ({self.label})"
        return f"at most {self.file_size:,} bytes ({self.label})"


def size_budget(text: str) -> Budget:
    return Budget(f"--size {text}", file_size=parse_size(text))


def bpw_budget(x: float) -> Budget:
    if not math.isfinite(x) or x <= 0:
        raise TuneError(f"--bpw {x}: must be a positive number")
    return Budget(f"--bpw {x:g}", bpw=float(x))


def like_budget(
    loaded: LoadedRecipe, target: str, like: str, resolver: Resolver | None = None
) -> Budget:
    """The exact Plan size of a target named ``target`` that extends the stock mix ``like``
    (``llama.cpp:<MIX>``) with the recipe's shared rules and imatrix setting."""
    mix = like.removeprefix(STOCK_PREFIX)
    if not like.startswith(STOCK_PREFIX):
        raise TuneError(f"--like {like}: expected {STOCK_PREFIX}<MIX>, e.g. llama.cpp:Q4_K_M")
    if mix not in stock.MIXES:
        close = difflib.get_close_matches(mix.upper(), list(stock.MIXES), n=1)
        hint = f" (did you mean '{STOCK_PREFIX}{close[0]}'?)" if close else ""
        raise TuneError(f"--like {like}: unknown llama.cpp mix '{mix}'{hint}")
    res = resolver or Resolver(loaded)
    plan = _plan_with(res, loaded, target, Target(extends=f"{STOCK_PREFIX}{mix}"))
    return Budget(f"--like {STOCK_PREFIX}{mix}", file_size=plan.file_size)


@dataclass(frozen=True)
class Bound:
    """Per-kind limits: the group's type must lie between ``lo`` and ``hi`` (by bpw)."""

    kind: str
    lo: qtypes.GGMLType | None
    hi: qtypes.GGMLType | None

    def allows(self, t: qtypes.GGMLType) -> bool:
        eps = 1e-9
        if self.lo is not None and t.bpw < self.lo.bpw - eps:
            return False
        return not (self.hi is not None and t.bpw > self.hi.bpw + eps)

    def __str__(self) -> str:
        lo = self.lo.key if self.lo else ""
        hi = self.hi.key if self.hi else ""
        return f"{self.kind}={lo}..{hi}"


def parse_bound(text: str) -> Bound:
    """``attn_v=q5_0..q8_0``, ``ffn_down=q4_k..``, ``output=..q6_k``."""
    kind, eq, rng = text.partition("=")
    lo_s, dots, hi_s = rng.partition("..")
    if not eq or not dots or not kind.strip() or not (lo_s.strip() or hi_s.strip()):
        raise TuneError(f"--bound {text!r}: expected KIND=MIN..MAX, e.g. attn_v=q5_0..q8_0")
    try:
        lo = qtypes.parse_type(lo_s) if lo_s.strip() else None
        hi = qtypes.parse_type(hi_s) if hi_s.strip() else None
    except QuantTypeError as e:
        raise TuneError(f"--bound {text}: {e}") from None
    if lo is not None and hi is not None and lo.bpw > hi.bpw:
        raise TuneError(f"--bound {text}: {lo.name} has more bits per weight than {hi.name}")
    return Bound(_kind_key(kind), lo, hi)


def _kind_key(kind: str) -> str:
    return kind.strip().removesuffix(".weight")


# -- the solver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One choice for a group: a type, the bytes it costs and its predicted KLD increase."""

    type: str
    bytes: int
    cost: float


@dataclass
class Solution:
    choice: list[int]  # index into each group's options
    cost: float
    bytes: int
    bound: float  # Lagrangian dual value: no feasible choice costs less
    lam: float  # the multiplier (KLD per byte) at which the bound is taken
    capacity: int
    exact: bool = False  # the branch and bound finished: ``cost`` is the optimum
    nodes: int = 0

    @property
    def gap(self) -> float:
        return max(0.0, self.cost - self.bound)


def _pareto(opts: Sequence[Option]) -> list[int]:
    """Indices of the options no other option beats on both bytes and cost, lightest first."""
    order = sorted(range(len(opts)), key=lambda i: (opts[i].bytes, opts[i].cost, opts[i].type))
    out: list[int] = []
    for i in order:
        if not out or opts[i].cost < opts[out[-1]].cost:
            if out and opts[i].bytes == opts[out[-1]].bytes:
                out[-1] = i  # same bytes, cheaper (cannot happen after the sort; defensive)
            else:
                out.append(i)
    return out


def _hull(opts: Sequence[Option], front: list[int]) -> list[int]:
    """The lower convex hull of the Pareto front in (bytes, cost), lightest first."""
    hull: list[int] = []
    for i in front:
        while len(hull) >= 2:
            a, b = opts[hull[-2]], opts[hull[-1]]
            c = opts[i]
            # b lies on or above the segment a-c: drop it
            if (b.cost - a.cost) * (c.bytes - a.bytes) >= (c.cost - a.cost) * (b.bytes - a.bytes):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def dual_value(groups: Sequence[Sequence[Option]], capacity: int, lam: float) -> float:
    """``Σ_g min_o (cost + λ·bytes) − λ·capacity``: a lower bound on the optimum for λ ≥ 0."""
    return sum(min(o.cost + lam * o.bytes for o in g) for g in groups) - lam * capacity


def solve(
    groups: Sequence[Sequence[Option]], capacity: int, node_limit: int = NODE_LIMIT
) -> Solution | None:
    """Pick one option per group with total bytes <= capacity, minimising total cost.

    Lagrangian relaxation solved exactly at its breakpoint, then a greedy fill; then a branch
    and bound seeded with that solution and pruned by the Lagrangian bound, which proves the
    optimum when it finishes within ``node_limit`` nodes (small problems). None when even the
    lightest option of every group does not fit.
    """
    fronts = [_pareto(g) for g in groups]
    choice = [f[0] for f in fronts]
    used = sum(groups[g][c].bytes for g, c in enumerate(choice))
    if used > capacity:
        return None
    # hull segments, best KLD saved per byte first (within a group they come in hull order)
    segs: list[tuple[float, int, int, int]] = []
    for g, f in enumerate(fronts):
        h = _hull(groups[g], f)
        for a, b in itertools.pairwise(h):
            oa, ob = groups[g][a], groups[g][b]
            segs.append(((oa.cost - ob.cost) / (ob.bytes - oa.bytes), g, a, b))
    segs.sort(key=lambda s: -s[0])
    lam: float | None = None
    broken: set[int] = set()
    for eff, g, a, b in segs:
        if g in broken or choice[g] != a:
            continue
        step = groups[g][b].bytes - groups[g][a].bytes
        if used + step <= capacity:
            choice[g] = b
            used += step
        else:
            if lam is None:
                lam = eff  # the first segment that does not fit sets the multiplier
            broken.add(g)
    # fill: the largest cost decrease that still fits, until none does
    while True:
        best: tuple[float, int, int] | None = None
        room = capacity - used
        for g, f in enumerate(fronts):
            cur = groups[g][choice[g]]
            for i in f:
                o = groups[g][i]
                if o.bytes > cur.bytes and o.bytes - cur.bytes <= room and o.cost < cur.cost:
                    gain = cur.cost - o.cost
                    if best is None or gain > best[0]:
                        best = (gain, g, i)
        if best is None:
            break
        _, g, i = best
        used += groups[g][i].bytes - groups[g][choice[g]].bytes
        choice[g] = i
    cost = sum(groups[g][c].cost for g, c in enumerate(choice))
    lam = lam or 0.0  # everything fitted: the unconstrained optimum
    bound = min(cost, dual_value(groups, capacity, lam))
    sol = Solution(choice, cost, used, bound, lam, capacity)
    if cost - bound <= _EPS * max(1.0, abs(cost)):
        sol.exact, sol.bound = True, cost
    elif node_limit > 0:
        _branch_and_bound(groups, fronts, sol, node_limit)
    return sol


def _branch_and_bound(
    groups: Sequence[Sequence[Option]], fronts: list[list[int]], sol: Solution, limit: int
) -> None:
    """Depth-first search over the groups' Pareto options, improving ``sol`` in place. A node
    is pruned when its cost so far plus the Lagrangian bound of the groups left (at the root's
    multiplier, or with no capacity limit at all) cannot beat the best known."""
    lam = sol.lam
    n = len(groups)
    # most decisive groups first: the widest spread of cost
    order = sorted(
        range(n), key=lambda g: -(groups[g][fronts[g][0]].cost - groups[g][fronts[g][-1]].cost)
    )
    cands = [
        sorted(fronts[g], key=lambda i: groups[g][i].cost + lam * groups[g][i].bytes) for g in order
    ]
    lag = [0.0] * (n + 1)  # Σ over groups i.. of min (cost + λ·bytes)
    low = [0.0] * (n + 1)  # Σ over groups i.. of min cost
    light = [0] * (n + 1)  # Σ over groups i.. of min bytes
    for i in range(n - 1, -1, -1):
        opts = [groups[order[i]][k] for k in cands[i]]
        lag[i] = lag[i + 1] + min(o.cost + lam * o.bytes for o in opts)
        low[i] = low[i + 1] + min(o.cost for o in opts)
        light[i] = light[i + 1] + min(o.bytes for o in opts)
    best = sol.cost
    best_pick: list[int] | None = None
    pick = [0] * n
    pos = [0] * n
    cost_at = [0.0] * (n + 1)
    room_at = [0] * (n + 1)
    room_at[0] = sol.capacity
    nodes = 0
    i = 0
    while i >= 0:
        if i == n:
            if cost_at[n] < best - _EPS * max(1.0, abs(best)):
                best, best_pick = cost_at[n], list(pick)
            i -= 1
            continue
        if pos[i] == len(cands[i]):
            pos[i] = 0
            i -= 1
            continue
        k = cands[i][pos[i]]
        pos[i] += 1
        o = groups[order[i]][k]
        room = room_at[i] - o.bytes
        if room < light[i + 1]:
            continue
        c = cost_at[i] + o.cost
        nodes += 1
        if nodes > limit:
            break
        if c + max(low[i + 1], lag[i + 1] - lam * room) >= best - _EPS * max(1.0, abs(best)):
            continue
        pick[i], cost_at[i + 1], room_at[i + 1] = k, c, room
        i += 1
    sol.nodes = nodes
    if best_pick is not None:
        for i, k in enumerate(best_pick):
            sol.choice[order[i]] = k
        sol.cost = sum(groups[g][c].cost for g, c in enumerate(sol.choice))
        sol.bytes = sum(groups[g][c].bytes for g, c in enumerate(sol.choice))
    if nodes <= limit:
        sol.exact = True
        sol.bound = sol.cost


# -- tuning a target --------------------------------------------------------------------------


@dataclass
class TuneResult:
    """A tuned recipe (not yet written) and what was predicted for it."""

    old: LoadedRecipe
    new: LoadedRecipe
    target: str
    created: bool
    plan: Plan
    budget: Budget
    measurement: Measurement
    solution: Solution
    predicted_kld: float
    groups: int  # groups optimised
    pinned_groups: int
    rules: int  # rules written (pinned ones not counted)
    rounds: int
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.new.text


def _plan_with(res: Resolver, loaded: LoadedRecipe, name: str, target: Target) -> Plan:
    """Plan ``target`` as the recipe's target ``name`` (added or replaced in memory)."""
    lr = _with_target(loaded, name, target)
    return res.for_recipe(lr).plan(name)


def _with_target(loaded: LoadedRecipe, name: str, target: Target) -> LoadedRecipe:
    data = loaded.recipe.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    targets = dict(data.get("targets", {}))
    targets[name] = target.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    data["targets"] = targets
    data["schema_version"] = loaded.recipe.schema_version
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:  # a bad target name and the like
        msg = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise TuneError(f"{loaded.path}: targets.{name}: {msg}") from None
    text = dump_recipe(recipe, loaded.path)
    return LoadedRecipe(parse_recipe(text, loaded.path), loaded.path, text)


def _pinned_labels(recipe: Recipe, name: str) -> set[str]:
    out = {f"rules[{i}]" for i, r in enumerate(recipe.rules) if r.pin}
    t = recipe.targets.get(name)
    if t is not None:
        out |= {f"targets.{name}.rules[{i}]" for i, r in enumerate(t.rules) if r.pin}
    return out


@dataclass
class _Group:
    m: MeasuredGroup
    tensors: list[TensorInfo]
    options: list[Option]
    stored: list[dict[str, qtypes.GGMLType]]  # per option: tensor -> the type it is stored as


def _glob_safe(s: str) -> bool:
    return not any(c in s for c in "*?[]")


def compact_rules(
    tensors: Sequence[TensorInfo],
    chosen: dict[str, qtypes.GGMLType],
    default: dict[str, qtypes.GGMLType],
    n_layers: int,
) -> list[Rule]:
    """Rules giving every tensor in ``chosen`` its type, on top of ``default``: one per
    (tensor kind, type) with a layer range list (none when it covers every layer), nothing where
    the default already gives that type; non-layer tensors by exact name."""
    by_kind: dict[str, dict[int, qtypes.GGMLType]] = {}
    kind_layers: dict[str, set[int]] = {}
    kinds: list[str] = []
    out: list[Rule] = []
    for t in tensors:
        if t.layer is not None:
            kind_layers.setdefault(t.kind, set()).add(t.layer)
        if t.name not in chosen:
            continue
        want = chosen[t.name]
        if t.layer is None:
            if default.get(t.name) != want:
                match = t.name if _glob_safe(t.name) else "re:" + re.escape(t.name)
                out.append(Rule(match=match, type=want.key))
            continue
        if t.kind not in by_kind:
            by_kind[t.kind] = {}
            kinds.append(t.kind)
        by_kind[t.kind][t.layer] = want
    names = {(t.layer, t.kind): t.name for t in tensors if t.layer is not None}
    for kind in kinds:
        per_layer = by_kind[kind]
        present = kind_layers[kind]
        for want in sorted(set(per_layer.values()), key=lambda q: (q.bpw, q.name)):
            need = {
                lay
                for lay, q in per_layer.items()
                if q == want and default.get(names[(lay, kind)]) != want
            }
            if not need:
                continue
            # a layer may be covered when it gets this type anyway or has no such tensor
            ok = {lay for lay, q in per_layer.items() if q == want} | (
                set(range(n_layers)) - present
            )
            runs: list[list[int]] = []
            for lay in range(max(n_layers, max(present) + 1)):
                if lay in ok:
                    if runs and runs[-1][-1] == lay - 1:
                        runs[-1].append(lay)
                    else:
                        runs.append([lay])
            kept = [r for r in runs if need & set(r)]
            covered = {lay for r in kept for lay in r}
            if present <= covered:
                layers: str | None = None
            else:
                span: set[int] = set()
                for r in kept:
                    hit = [lay for lay in r if lay in need]
                    span |= {lay for lay in r if hit[0] <= lay <= hit[-1]}
                layers = format_layers(span)
            glob = f"blk.*.{kind}"
            rule = Rule(match=glob, layers=layers, type=want.key)
            target_set = {
                names[(lay, kind)]
                for lay in present
                if layers is None or lay in (rule.layer_set or ())
            }
            hits = {t.name for t in tensors if rule.matches(t.name, t.layer)}
            if not _glob_safe(kind) or hits != target_set:
                rule = Rule(match=r"re:blk\.\d+\." + re.escape(kind), layers=layers, type=want.key)
            out.append(rule)
    return out


def _note(
    old: str | None,
    budget: Budget,
    meas: Measurement,
    predicted: float,
    sol: Solution,
    plan: Plan,
) -> str:
    head = (old or "").split(NOTE_MARK)[0].rstrip(" ;")
    tune = (
        f"{NOTE_MARK} budget {budget.describe()}: {plan.file_size:,} bytes, {plan.bpw:.4f} bpw; "
        f"measurement {meas.key or '(no key)'} ({meas.method or 'method not stated'}); "
        f"predicted KLD {predicted:.6g} nats/token (sum of group costs), {optimality(sol)}"
    )
    return f"{head}; {tune}" if head else tune


def optimality(sol: Solution) -> str:
    """How good the choice is known to be, in words."""
    if sol.exact:
        return "optimal (proven by branch and bound)" if sol.nodes else "optimal (LP bound met)"
    rel = sol.gap / abs(sol.cost) if sol.cost else 0.0
    return (
        f"optimality gap <= {sol.gap:.3g} ({100 * rel:.3g}%) against the Lagrangian bound "
        f"{sol.bound:.6g}"
    )


def tune(
    loaded: LoadedRecipe,
    target: str,
    budget: Budget,
    measurement: Measurement,
    bounds: Sequence[Bound] = (),
    say: Callable[[str], None] = lambda m: None,
) -> TuneResult:
    """Tune ``target`` of a recipe to ``budget``; returns the new recipe without writing it."""
    recipe = loaded.recipe
    if measurement.recipe != recipe.name:
        raise TuneError(
            f"{measurement.path}: measurement is of recipe '{measurement.recipe}', "
            f"not '{recipe.name}'"
        )
    res = Resolver(loaded)
    inv = res.inventory
    info = {t.name: t for t in inv.tensors}
    existing = recipe.targets.get(target)
    created = existing is None
    warnings: list[str] = []

    # tensors whose type a pinned rule sets keep it
    labels = _pinned_labels(recipe, target)
    if existing is not None:
        current = res.plan(target)
        pinned_rules = [r for r in existing.rules if r.pin]
        skeleton = Target(
            base=existing.base, extends=existing.extends, note=existing.note, rules=pinned_rules
        )
    else:
        pinned_rules = []
        skeleton = Target(base=_CREATED_BASE)
        current = _plan_with(res, loaded, target, skeleton)
    pinned = {t.name for t in current.tensors if t.rule in labels}
    current_type = {t.name: t.type for t in current.tensors}

    # groups and their options
    quantizable = {t.name for t in inv.tensors if stock.is_quantizable(t, inv.arch)}
    has_imatrix = default_imatrix_ref(loaded) is not None
    bound_by_kind: dict[str, Bound] = {}
    kinds = {_kind_key(g.kind) for g in measurement.groups}
    for b in bounds:
        if b.kind not in kinds:
            close = difflib.get_close_matches(b.kind, sorted(kinds), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TuneError(f"--bound {b}: no measured group has kind '{b.kind}'{hint}")
        bound_by_kind[b.kind] = b
    padded = budget.padded()
    free: list[_Group] = []
    fixed_cost = 0.0
    unmeasured_pins = 0
    n_pinned = 0
    for g in measurement.groups:
        where = f"{measurement.path}: group '{g.name}'"
        tinfos = []
        for name in g.tensors:
            t = info.get(name)
            if t is None:
                close = difflib.get_close_matches(name, list(info), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise TuneError(f"{where}: no tensor '{name}' in the inventory{hint}")
            if name not in quantizable:
                raise TuneError(f"{where}: '{name}' is a tensor llama.cpp does not quantize")
            tinfos.append(t)
        pins = [t.name for t in tinfos if t.name in pinned]
        if pins:
            if len(pins) != len(tinfos):
                other = next(t.name for t in tinfos if t.name not in pinned)
                raise TuneError(
                    f"{where}: partly pinned ('{pins[0]}' is, '{other}' is not): pin all of a "
                    "group's tensors or none"
                )
            n_pinned += 1
            types = {current_type[t.name].name for t in tinfos}
            if len(types) == 1 and (ty := types.pop()) in g.costs:
                fixed_cost += g.costs[ty]
            else:
                unmeasured_pins += 1
            continue
        bound = bound_by_kind.get(_kind_key(g.kind))
        options: dict[tuple[str, ...], tuple[Option, dict[str, qtypes.GGMLType]]] = {}
        for tname, cost in g.costs.items():
            qt = qtypes.parse_type(tname)
            if not qt.storable:
                continue
            try:
                per = {t.name: stock.fallback(qt, t.shape[0]) for t in tinfos}
            except QuantTypeError:
                continue
            if not has_imatrix and any(stock.requires_imatrix(n, q.gguf) for n, q in per.items()):
                continue
            if bound is not None and not all(bound.allows(q) for q in per.values()):
                continue
            nbytes = 0
            for t in tinfos:
                b = per[t.name].nbytes(t.shape)
                nbytes += layout.pad(b, inv.alignment) if padded else b
            sig = tuple(per[t.name].name for t in tinfos)
            # a measured type that falls back to another measured type: keep the cheaper cost
            if sig not in options or cost < options[sig][0].cost:
                label = sig[0] if len(set(sig)) == 1 else qt.name
                options[sig] = (Option(label, nbytes, cost), per)
        if not options:
            why = f" within --bound {bound}" if bound is not None else ""
            why += "" if has_imatrix else " (types needing an imatrix excluded: no calibration)"
            raise TuneError(f"{where}: no measured type it can take{why}")
        opts = list(options.values())
        free.append(_Group(g, tinfos, [o for o, _ in opts], [p for _, p in opts]))
    if unmeasured_pins:
        warnings.append(
            f"{unmeasured_pins} pinned group(s) have no measured cost for their type: "
            "not counted in the predicted KLD"
        )
    if not free:
        raise TuneError(f"{measurement.path}: every measured group is pinned: nothing to tune")
    free_names = {t.name for g in free for t in g.tensors}

    def solve_with(skel: Target, tighten: int) -> tuple[Plan, Solution, int]:
        plan = _plan_with(res, loaded, target, skel)
        lim = budget.limit(plan)
        used = budget.used(plan)
        for t in plan.tensors:
            if t.name in free_names:
                used -= layout.pad(t.bytes, inv.alignment) if padded else t.bytes
        capacity = lim - used - tighten
        sol = solve([g.options for g in free], capacity)
        if sol is None:
            least = used + sum(min(o.bytes for o in g.options) for g in free)
            what = f"{least:,} bytes" if padded else f"{least * 8 / plan.n_elements:.4f} bpw"
            raise TuneError(
                f"{loaded.path}: targets.{target}: budget {budget.describe()} is below the "
                "smallest this measurement allows: "
                f"{what} with every group at its lightest type"
            )
        return plan, sol, capacity

    def chosen_of(sol: Solution) -> dict[str, qtypes.GGMLType]:
        out: dict[str, qtypes.GGMLType] = {}
        for g, c in zip(free, sol.choice, strict=True):
            out.update(g.stored[c])
        return out

    if created:
        # a new target's base: the chosen type that leaves the fewest rules
        _, sol, _ = solve_with(skeleton, 0)
        chosen = chosen_of(sol)
        best: tuple[int, int, str] | None = None
        weight: dict[str, int] = {}
        for n, q in chosen.items():
            weight[q.key] = weight.get(q.key, 0) + q.nbytes(info[n].shape)
        for key in sorted(weight):
            plan = _plan_with(res, loaded, target, Target(base=key))
            default = {t.name: t.type for t in plan.tensors}
            n_rules = len(compact_rules(inv.tensors, chosen, default, inv.n_layers))
            cand = (n_rules, -weight[key], key)
            if best is None or cand < best:
                best = cand
        assert best is not None
        skeleton = Target(base=best[2])

    # a rule the tuning writes again keeps its note
    old_notes = {
        (r.match, r.layers, r.qtype.name): r.note
        for r in (existing.rules if existing else [])
        if not r.pin and r.note
    }
    tighten = 0
    for rnd in range(1, _MAX_ROUNDS + 1):
        skel_plan, sol, _ = solve_with(skeleton, tighten)
        chosen = chosen_of(sol)
        default = {t.name: t.type for t in skel_plan.tensors}
        rules = [
            r.model_copy(update={"note": old_notes.get((r.match, r.layers, r.qtype.name))})
            for r in compact_rules(inv.tensors, chosen, default, inv.n_layers)
        ]
        predicted = sol.cost + fixed_cost
        draft = Target(base=skeleton.base, extends=skeleton.extends, rules=[*pinned_rules, *rules])
        plan = _plan_with(res, loaded, target, draft)
        for t in plan.tensors:
            want = chosen.get(t.name, default[t.name])
            if t.type != want:
                raise TuneError(
                    f"internal error: the compact rules give '{t.name}' {t.type.name}, "
                    f"not {want.name}"
                )
        if not budget.fits(plan):
            over = budget.used(plan) - budget.limit(plan)
            say(f"round {rnd}: {over:,} bytes over the budget; tightening")
            tighten += max(1, over)
            continue
        note = _note(existing.note if existing else None, budget, measurement, predicted, sol, plan)
        final = Target(base=skeleton.base, extends=skeleton.extends, note=note, rules=draft.rules)
        new = _with_target(loaded, target, final)
        plan = res.for_recipe(new).plan(target)
        if not budget.fits(plan):  # the note is not in the file: cannot change the size
            raise TuneError("internal error: the tuned target no longer fits after its note")
        return TuneResult(
            old=loaded,
            new=new,
            target=target,
            created=created,
            plan=plan,
            budget=budget,
            measurement=measurement,
            solution=sol,
            predicted_kld=predicted,
            groups=len(free),
            pinned_groups=n_pinned,
            rules=len(rules),
            rounds=rnd,
            warnings=warnings,
        )
    raise TuneError(f"could not fit budget {budget.describe()} after {_MAX_ROUNDS} rounds")


def write_result(result: TuneResult) -> None:
    """Save the tuned recipe canonically and atomically; refuse to drop the file's comments."""
    old = result.old
    line = comment_line(old.text)
    if line is not None:
        raise TuneError(
            f"{old.path}:{line}: comments are not kept by the canonical form; move them into "
            "'note' fields (then dynq fmt), and run dynq tune again"
        )
    save_recipe(result.new.recipe, old.path)


def verify(
    result: TuneResult,
    out: Path | None = None,
    device: str | None = None,
    chunks: int | None = None,
    warn: Callable[[str], None] = lambda m: None,
    say: Callable[[str], None] = lambda m: None,
) -> dict[str, object]:
    """Build the tuned target and evaluate it; the evaluation report (``mean_kld`` …)."""
    from dynq.build import Builder, BuildOptions
    from dynq.compare import evaluate_files
    from dynq.outputs import output_path

    opts = BuildOptions(targets=[result.target], out=out, device=device, force=True)
    Builder(result.new, opts, warn=warn, say=say).run()
    path = output_path(result.new, result.target, out)
    reports = evaluate_files(
        result.new, {result.target: path}, out, device=device or "cpu", chunks=chunks
    )
    return reports[0]
