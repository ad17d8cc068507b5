"""``dynq tune``: the knapsack solver, budgets to the byte, pins, bounds, compact canonical rules."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dynq import qtypes, stock
from dynq.gguf_io import inventory_from_gguf
from dynq.inventory import TensorInfo, load_inventory
from dynq.plan import Plan, Resolver
from dynq.recipe import dump_recipe, load_recipe
from dynq.tune import (
    Option,
    TuneError,
    bpw_budget,
    compact_rules,
    load_measurement,
    parse_bound,
    parse_size,
    size_budget,
    solve,
    tune,
)
from tests import tiny_model
from tests.conftest import MINIMAL, REGISTRY

TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")

TWO = """\
schema_version = 1
name = "tiny"
version = "1.0.0"
description = "q4_0 everywhere"

[model]
arch = "llama"
inventory = "inventories/smollm2-135m.json"

[targets.T]
base = "q4_0"
"""


def _cost_default(t: TensorInfo, q: qtypes.GGMLType) -> float:
    """Error falling with bits, heavier for attn_v and the outer layers."""
    w = 3.0 if "attn_v" in t.name else 1.0
    if t.layer is not None and (t.layer < 3 or t.layer > 26):
        w *= 2
    return w * t.n_elements * 1e-9 * 2 ** (-q.bpw)


def _measure(
    d: Path,
    cost: Callable[[TensorInfo, qtypes.GGMLType], float] = _cost_default,
    types: tuple[str, ...] = TYPES,
    name: str = "tiny",
    inventory: str = "inventories/smollm2-135m.json",
    pair: bool = False,
) -> Path:
    """A measurement in dynq measure's format: one group per quantizable tensor (or, with
    ``pair``, attn_k and attn_v of a layer together), costs only for the types a tensor can
    really take."""
    inv = load_inventory(d / inventory)
    groups: list[dict] = []
    paired: dict[int, dict] = {}
    for t in inv.tensors:
        if len(t.shape) < 2 or not stock.is_quantizable(t, inv.arch):
            continue
        costs: dict[str, float] = {}
        for n in types:
            q = stock.fallback(qtypes.get(n), t.shape[0])
            if q.is_quantized:
                costs[q.name] = cost(t, q)
        kind = t.kind.removesuffix(".weight")
        if pair and kind in ("attn_k", "attn_v") and t.layer is not None:
            g = paired.get(t.layer)
            if g is None:
                g = paired[t.layer] = {
                    "name": f"blk.{t.layer}.attn_kv",
                    "kind": "attn_kv",
                    "layer": t.layer,
                    "tensors": [],
                    "costs": {},
                }
                groups.append(g)
            g["tensors"].append(t.name)
            for k, v in costs.items():
                g["costs"][k] = g["costs"].get(k, 0.0) + v
            continue
        groups.append(
            {
                "name": t.name.removesuffix(".weight"),
                "kind": kind,
                "layer": t.layer,
                "tensors": [t.name],
                "costs": costs,
            }
        )
    doc = {"format": 1, "recipe": name, "key": "ab" * 32, "method": "synthetic", "groups": groups}
    path = d / "measurements" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def _plan(path: Path, target: str) -> Plan:
    return Resolver(load_recipe(path)).plan(target)


def _predicted(meas: Path, plan: Plan) -> float:
    """The summed measured cost of the types a Plan gives."""
    types = {t.name: t.type.name for t in plan.tensors}
    total = 0.0
    for g in json.loads(meas.read_text())["groups"]:
        (ty,) = {types[n] for n in g["tensors"]}
        total += g["costs"][ty]
    return total


# -- the solver -------------------------------------------------------------------------------


def _brute(groups: list[list[Option]], cap: int) -> float:
    return min(
        sum(o.cost for o in c) for c in itertools.product(*groups) if sum(o.bytes for o in c) <= cap
    )


def test_solver_against_brute_force():
    rng = random.Random(7)
    lagrangian_exact = 0
    for _ in range(300):
        groups = [
            [Option(f"t{j}", rng.randint(1, 60), rng.uniform(-0.05, 1.0)) for j in range(k)]
            for k in (rng.randint(1, 5) for _ in range(rng.randint(1, 6)))
        ]
        lo = sum(min(o.bytes for o in g) for g in groups)
        hi = sum(max(o.bytes for o in g) for g in groups)
        cap = rng.randint(lo, hi)
        best = _brute(groups, cap)
        # Lagrangian relaxation and fill alone: feasible, bound valid, gap honest
        sol = solve(groups, cap, node_limit=0)
        assert sol is not None and sol.bytes <= cap
        assert sum(g[c].bytes for g, c in zip(groups, sol.choice, strict=True)) == sol.bytes
        assert sol.bound <= best + 1e-12
        assert sol.cost - best <= sol.gap + 1e-12
        assert not sol.exact or abs(sol.cost - best) < 1e-12
        lagrangian_exact += abs(sol.cost - best) < 1e-12
        # with branch and bound: the optimum, proven
        sol = solve(groups, cap)
        assert sol is not None and sol.exact and sol.gap == 0
        assert sol.bytes <= cap and sol.cost == pytest.approx(best, abs=1e-12)
    assert lagrangian_exact > 250  # the heuristic alone is nearly always optimal here


def test_solver_large_instance_reports_a_gap():
    rng = random.Random(3)
    groups = [
        [Option(str(j), b, 1.0 / b + rng.uniform(0, 1e-3)) for j, b in enumerate((4, 5, 6, 9))]
        for _ in range(400)
    ]
    sol = solve(groups, 400 * 6 + 7, node_limit=1000)
    assert sol is not None and sol.bytes <= 400 * 6 + 7
    assert sol.bound <= sol.cost and sol.gap == sol.cost - sol.bound
    assert sol.gap / sol.cost < 1e-3


def test_solver_infeasible_and_unconstrained():
    groups = [[Option("a", 10, 1.0), Option("b", 20, 0.0)]] * 3
    assert solve(groups, 29) is None
    sol = solve(groups, 60)
    assert sol is not None and sol.cost == 0 and sol.exact and sol.gap == 0


# -- budgets and bounds -----------------------------------------------------------------------


def test_parse_size_and_bound():
    assert parse_size("1234") == 1234
    assert parse_size("95MB") == 95_000_000
    assert parse_size("1.5 GiB") == 3 * 2**29
    assert parse_size("2kib") == 2048
    for bad in ("", "12XB", "-3MB", "0"):
        with pytest.raises(TuneError):
            parse_size(bad)
    b = parse_bound("attn_v.weight=q5_0..Q8_0")
    assert b.kind == "attn_v" and b.lo.name == "Q5_0" and b.hi.name == "Q8_0"
    assert b.allows(qtypes.get("Q6_K")) and not b.allows(qtypes.get("Q4_K"))
    assert parse_bound("ffn_down=..q4_k").allows(qtypes.get("IQ4_NL"))  # same bpw
    for bad in ("attn_v", "attn_v=q5_0", "attn_v=..", "attn_v=q8_0..q4_0", "attn_v=q9..q8_0"):
        with pytest.raises(TuneError):
            parse_bound(bad)


# -- tuning targets ---------------------------------------------------------------------------


def test_known_optimum_exact_budget_and_compact_rule(dynq, write_recipe, recipe_dir):
    """Only attn_v of layers 0-9 matters, and the budget is exactly what upgrading those to
    Q8_0 takes: the one optimum, at the budget to the byte, written as one rule."""
    p = write_recipe(TWO)

    def cost(t: TensorInfo, q: qtypes.GGMLType) -> float:
        if q.name == "Q8_0":
            return 0.0
        return 1.0 if "attn_v" in t.name and t.layer is not None and t.layer < 10 else 1e-9

    meas = _measure(recipe_dir, cost, types=("Q4_0", "Q8_0"))
    p.write_text(
        TWO.replace(
            'base = "q4_0"',
            'base = "q4_0"\nrules = [{ match = "blk.*.attn_v.weight", layers = "0-9", '
            'type = "q8_0" }]',
        )
    )
    budget = _plan(p, "T").file_size  # the expected answer's exact size
    p.write_text(TWO)
    r = dynq("tune", p, "--target", "T", "--size", str(budget))
    assert r.code == 0, r.err
    assert "optimal" in r.out and f"wrote {p}" in r.out
    rules = load_recipe(p).recipe.targets["T"].rules
    assert [(x.match, x.layers, x.type) for x in rules] == [("blk.*.attn_v.weight", "0-9", "q8_0")]
    plan = _plan(p, "T")
    assert plan.file_size == budget
    assert _predicted(meas, plan) == pytest.approx(200 * 1e-9, rel=0.1)
    assert dynq("fmt", "--check", p).code == 0

    # one byte less: some attn_v 0-9 must stay Q4_0, and the file still fits to the byte
    p.write_text(TWO)
    r = dynq("tune", p, "--target", "T", "--size", str(budget - 1))
    assert r.code == 0, r.err
    plan = _plan(p, "T")
    assert plan.file_size <= budget - 1
    assert sum(t.type.name == "Q8_0" for t in plan.tensors if "attn_v" in t.name) == 9


def test_like_q4_k_m_canonical_and_diff(dynq, write_recipe, recipe_dir, tmp_path):
    p = write_recipe(MINIMAL)
    dynq("fmt", p)
    before = p.read_text()
    old = tmp_path / "old" / "tiny.toml"
    old.parent.mkdir()
    shutil.copytree(recipe_dir / "inventories", old.parent / "inventories")
    old.write_text(before)
    meas = _measure(recipe_dir)
    budget = _plan(p, "Q4_K_M").file_size
    r = dynq("tune", p, "-t", "Q4_K_M", "--like", "llama.cpp:Q4_K_M")
    assert r.code == 0, r.err
    target = load_recipe(p).recipe.targets["Q4_K_M"]
    assert target.extends == "llama.cpp:Q4_K_M"
    plan = _plan(p, "Q4_K_M")
    assert plan.file_size <= budget
    # the note records budget, measurement and prediction; the prediction is the Plan's
    note = target.note or ""
    assert f"at most {budget:,} bytes (--like llama.cpp:Q4_K_M)" in note
    assert "ab" * 32 in note and "(synthetic)" in note
    predicted = float(note.split("predicted KLD ")[1].split()[0])
    assert predicted == pytest.approx(_predicted(meas, plan), rel=1e-5)
    # compact: a handful of kind/type rules for 211 groups, layer rules by kind and range
    assert 0 < len(target.rules) <= 20
    for rule in target.rules:
        assert rule.match == "token_embd.weight" or (
            rule.match.startswith("blk.*.") and rule.match.endswith(".weight")
        )
    assert len({(x.match, x.type) for x in target.rules}) == len(target.rules)
    # canonical, and dynq diff shows the change
    assert p.read_text() == dump_recipe(load_recipe(p).recipe, p)
    assert dynq("fmt", "--check", p).code == 0
    d = dynq("diff", old, p)
    assert d.code == 0 and "target Q4_K_M: changed" in d.out
    assert "+ targets.Q4_K_M.rules" in d.out


def test_dry_run_writes_nothing(dynq, write_recipe, recipe_dir):
    p = write_recipe(TWO)
    _measure(recipe_dir)
    files = sorted(x.name for x in recipe_dir.iterdir())
    r = dynq("tune", p, "-t", "T", "--bpw", "5.0", "--dry-run")
    assert r.code == 0, r.err
    assert "target T: changed" in r.out and "+ targets.T.rules" in r.out
    assert "tuned target T" in r.err and "wrote" not in r.out + r.err
    assert p.read_text() == TWO
    assert sorted(x.name for x in recipe_dir.iterdir()) == files
    r = dynq("tune", p, "-t", "T", "--bpw", "5.0", "--dry-run", "--format", "markdown")
    assert r.code == 0 and "| T | changed |" in r.out
    assert p.read_text() == TWO


def test_created_target_bpw(dynq, write_recipe, recipe_dir):
    p = write_recipe(MINIMAL)
    meas = _measure(recipe_dir)
    r = dynq("tune", p, "-t", "UD-5", "--bpw", "5.0")
    assert r.code == 0, r.err
    assert "created target UD-5" in r.out
    recipe = load_recipe(p).recipe
    assert list(recipe.targets) == ["Q4_K_M", "UD-5"]
    t = recipe.targets["UD-5"]
    assert t.base is not None and t.extends is None and "--bpw 5" in (t.note or "")
    plan = _plan(p, "UD-5")
    assert plan.bpw <= 5.0
    assert plan.bpw > 4.9  # the budget is used
    predicted = float((t.note or "").split("predicted KLD ")[1].split()[0])
    assert predicted == pytest.approx(_predicted(meas, plan), rel=1e-5)
    assert dynq("fmt", "--check", p).code == 0


def test_pins_kept_and_other_rules_replaced(write_recipe, recipe_dir):
    p = write_recipe(
        TWO
        + "rules = [\n"
        + '    { match = "blk.*.attn_k.weight", type = "q8_0", pin = true },\n'
        + '    { match = "blk.*.ffn_down.weight", type = "q8_0", note = "old" },\n'
        + "]\n"
    )
    meas = _measure(
        recipe_dir, lambda t, q: 0.5 if q.name == "Q4_0" else 0.1, types=("Q4_0", "Q8_0")
    )
    loaded = load_recipe(p)
    res = tune(loaded, "T", size_budget("10GB"), load_measurement(meas, "tiny"))
    plan = Resolver(res.new).plan("T")
    types = {t.name: t.type.name for t in plan.tensors}
    assert all(types[f"blk.{i}.attn_k.weight"] == "Q8_0" for i in range(30))
    rules = res.new.recipe.targets["T"].rules
    assert rules[0].pin and rules[0].match == "blk.*.attn_k.weight"
    assert res.pinned_groups == 30 and res.groups == 211 - 30
    # everything else goes to the cheapest-cost type, Q8_0, with no capacity limit
    assert all(ty == "Q8_0" for n, ty in types.items() if n.endswith(".weight") and "norm" not in n)
    assert res.solution.exact
    # the pinned groups' measured costs count in the prediction
    assert res.predicted_kld == pytest.approx(211 * 0.1)

    # the note keeps the maintainer's words before it, and a second tuning replaces its own
    assert res.new.recipe.targets["T"].note.startswith("dynq tune: budget at most 10,000,000,000")
    p.write_text(dump_recipe(res.new.recipe, p).replace('note = "', 'note = "keep it small; '))
    again = tune(load_recipe(p), "T", bpw_budget(6.0), load_measurement(meas, "tiny"))
    note = again.new.recipe.targets["T"].note or ""
    assert note.startswith("keep it small; dynq tune: budget at most 6 bpw")
    assert note.count("dynq tune:") == 1

    # a group with pinned and unpinned tensors is refused
    pair = _measure(recipe_dir, pair=True)
    with pytest.raises(TuneError, match="partly pinned"):
        tune(loaded, "T", size_budget("10GB"), load_measurement(pair, "tiny"))


def test_multi_tensor_groups_take_one_type(write_recipe, recipe_dir):
    p = write_recipe(TWO)
    meas = _measure(recipe_dir, pair=True)
    res = tune(load_recipe(p), "T", bpw_budget(5.0), load_measurement(meas, "tiny"))
    types = {t.name: t.type.name for t in Resolver(res.new).plan("T").tensors}
    for i in range(30):
        assert types[f"blk.{i}.attn_k.weight"] == types[f"blk.{i}.attn_v.weight"]
    assert res.plan.bpw <= 5.0


def test_bounds_respected(dynq, write_recipe, recipe_dir):
    p = write_recipe(TWO)

    # attn_v would rather be Q4_0, ffn_down would rather be Q8_0
    def cost(t: TensorInfo, q: qtypes.GGMLType) -> float:
        if "attn_v" in t.name:
            return 0.0 if q.name == "Q4_0" else 1.0
        return 1.0 / q.bpw

    _measure(recipe_dir, cost)
    r = dynq(
        "tune", p, "-t", "T", "--size", "1GB", "--bound", "attn_v=q8_0..",
        "--bound", "ffn_down=..q4_k",
    )  # fmt: skip
    assert r.code == 0, r.err
    plan = _plan(p, "T")
    for t in plan.tensors:
        if "attn_v" in t.name:
            assert t.type.name == "Q8_0"
        if "ffn_down" in t.name:
            assert t.type.bpw <= 4.5 and t.type.is_quantized
    r = dynq("tune", p, "-t", "T", "--size", "1GB", "--bound", "attn_vv=q8_0..")
    assert r.code == 2 and "no measured group has kind 'attn_vv' (did you mean 'attn_v'?)" in r.err
    r = dynq("tune", p, "-t", "T", "--size", "1GB", "--bound", "attn_v=..q2_k")
    assert r.code == 2 and "no measured type it can take within --bound attn_v=..q2_k" in r.err


def test_errors_one_line(dynq, write_recipe, recipe_dir):
    p = write_recipe(TWO)
    before = p.read_text()
    r = dynq("tune", p, "-t", "T", "--size", "90MB")
    assert r.code == 2 and r.err.count("\n") == 1
    assert str(recipe_dir / "measurements" / "tiny.json") in r.err and "not found" in r.err
    other = _measure(recipe_dir, name="other")
    r = dynq("tune", p, "-t", "T", "--size", "90MB", "--measurement", other)
    assert r.code == 2 and r.err.count("\n") == 1
    assert f"{other}: measurement is of recipe 'other', not 'tiny'" in r.err
    meas = _measure(recipe_dir)
    r = dynq("tune", p, "-t", "T", "--size", "1MB")
    assert r.code == 2 and "is below the smallest this measurement allows" in r.err
    doc = json.loads(meas.read_text())
    doc["groups"][0]["tensors"] = ["blk.0.atn_v.weight"]
    meas.write_text(json.dumps(doc))
    r = dynq("tune", p, "-t", "T", "--size", "90MB")
    assert r.code == 2 and "no tensor 'blk.0.atn_v.weight'" in r.err
    assert "did you mean 'blk.0.attn_v.weight'" in r.err
    r = dynq("tune", p, "-t", "T", "--like", "llama.cpp:Q4_K_N")
    assert r.code == 2 and "unknown llama.cpp mix 'Q4_K_N' (did you mean" in r.err
    assert p.read_text() == before


def test_refuses_to_drop_comments(dynq, write_recipe, recipe_dir):
    text = TWO.replace('base = "q4_0"', 'base = "q4_0"  # why: see notes')
    p = write_recipe(text)
    _measure(recipe_dir)
    r = dynq("tune", p, "-t", "T", "--bpw", "5")
    assert r.code == 2 and "tiny.toml:11: comments are not kept" in r.err
    assert p.read_text() == text
    assert dynq("tune", p, "-t", "T", "--bpw", "5", "--dry-run").code == 0


def test_compact_rules_cover_exactly():
    inv = load_inventory(REGISTRY / "inventories" / "smollm2-135m.json")
    q4, q5, q8 = (qtypes.get(n) for n in ("Q4_0", "Q5_0", "Q8_0"))
    default = {t.name: q4 for t in inv.tensors}
    chosen = {f"blk.{i}.ffn_up.weight": (q8 if i in (0, 1, 2, 28, 29) else q4) for i in range(30)}
    chosen |= {f"blk.{i}.attn_q.weight": q5 for i in range(30)}
    chosen["token_embd.weight"] = q8
    rules = compact_rules(inv.tensors, chosen, default, inv.n_layers)
    got = [(r.match, r.layers, r.type) for r in rules]
    assert got == [
        ("token_embd.weight", None, "q8_0"),
        ("blk.*.ffn_up.weight", "0-2,28-29", "q8_0"),
        ("blk.*.attn_q.weight", None, "q5_0"),
    ]
    # where the default already gives a type, a range may run through it (fewer ranges)
    default |= {f"blk.{i}.ffn_up.weight": q8 for i in (1, 28)}
    got = [(r.match, r.layers) for r in compact_rules(inv.tensors, chosen, default, 30)]
    assert ("blk.*.ffn_up.weight", "0-2,29") in got


# -- --verify: a tiny model with a byte-level tokenizer, built and evaluated in seconds --------


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: the 256 byte-level tokens."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def test_verify_builds_and_evaluates(dynq, tmp_path: Path):
    pytest.importorskip("torch")
    src = tmp_path / "tiny-f32.gguf"
    n_extra = tiny_model.N_VOCAB - 257
    tiny_model.write(
        src,
        chat_template=None,
        tokenizer_pre="gpt2",
        token_list=[*_byte_tokens(), "Ġt", *(f"<c{i}>" for i in range(n_extra))],
        token_types=[1] * 257 + [3] * n_extra,
        token_merges=["Ġ t"],
    )
    inventory_from_gguf(src).save(tmp_path / "tiny.json")
    shutil.copy(REGISTRY / "calibration" / "eval-docs-code-v1.txt", tmp_path / "eval.txt")
    p = tmp_path / "tiny.toml"
    p.write_text(
        'schema_version = 1\nname = "tiny"\nversion = "1.0.0"\ndescription = "tiny"\n\n'
        '[model]\narch = "llama"\nsource = "tiny-f32.gguf"\ninventory = "tiny.json"\n\n'
        '[evaluation]\nctx = 64\nchunks = 2\ntext = [{ path = "eval.txt" }]\n\n'
        '[targets.T]\nbase = "q8_0"\n'
    )
    _measure(tmp_path, types=("Q2_K", "Q4_K", "Q6_K", "Q8_0"), inventory="tiny.json")
    r = dynq("tune", p, "-t", "T", "--bpw", "4.5", "--verify", "--out", tmp_path / "out")
    assert r.code == 0, r.err
    line = next(x for x in r.out.splitlines() if x.startswith("verify T:"))
    measured = float(line.split("measured mean KLD ")[1].split()[0])
    assert measured > 0
    assert (tmp_path / "out" / "tiny-T.gguf").stat().st_size == _plan(p, "T").file_size
    assert (tmp_path / "out" / "tiny-T.eval.json").exists()
