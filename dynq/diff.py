"""Differences between two versions of a recipe: rules, targets, per-tensor types, size.

Per target, tensors whose type changed are grouped compactly by kind and by runs of layers with
the same change, e.g. ``blk.0-3.ffn_down.weight: Q4_K → Q5_K``. The Markdown rendering is made
to be pasted into a pull request.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dynq.plan import Plan, Resolver
from dynq.recipe import LoadedRecipe, Rule, format_layers


@dataclass
class RuleChange:
    where: str  # "rules" or "targets.<name>.rules"
    kind: str  # "added", "removed", "changed"
    old: Rule | None
    new: Rule | None


@dataclass
class TypeChange:
    pattern: str  # e.g. blk.0-3.ffn_down.weight
    old: str
    new: str
    count: int
    bytes_delta: int


@dataclass
class TargetDiff:
    name: str
    status: str  # "added", "removed", "changed", "same"
    old: Plan | None
    new: Plan | None
    changes: list[TypeChange] = field(default_factory=list)
    base_change: tuple[str, str] | None = None

    @property
    def size_delta(self) -> int:
        return (self.new.file_size if self.new else 0) - (self.old.file_size if self.old else 0)


@dataclass
class RecipeDiff:
    name: str
    old_version: str
    new_version: str
    fields: list[tuple[str, str, str]]  # (key, old, new) for scalar sections
    rules: list[RuleChange]
    targets: list[TargetDiff]

    @property
    def outputs_changed(self) -> bool:
        return any(t.status != "same" for t in self.targets)

    @property
    def empty(self) -> bool:
        return not (self.fields or self.rules or self.outputs_changed)

    @property
    def version_warning(self) -> str | None:
        if self.outputs_changed and self.old_version == self.new_version:
            return f"outputs change but version stays {self.new_version}: bump the recipe's version"
        return None


def _rule_key(r: Rule) -> tuple[str, str | None]:
    return (r.match, r.layers)


def _diff_rules(where: str, old: list[Rule], new: list[Rule]) -> list[RuleChange]:
    out: list[RuleChange] = []
    old_by = {_rule_key(r): r for r in old}
    new_by = {_rule_key(r): r for r in new}
    for r in old:
        k = _rule_key(r)
        if k not in new_by:
            out.append(RuleChange(where, "removed", r, None))
        elif new_by[k] != r:
            out.append(RuleChange(where, "changed", r, new_by[k]))
    for r in new:
        if _rule_key(r) not in old_by:
            out.append(RuleChange(where, "added", None, r))
    if not out and [_rule_key(r) for r in old] != [_rule_key(r) for r in new]:
        out.append(RuleChange(where, "changed", None, None))  # same rules, new order
    return out


def group_changes(old: Plan, new: Plan) -> list[TypeChange]:
    """Tensors whose type changed, grouped by kind and runs of layers with the same change."""
    old_by = old.by_name()
    groups: dict[tuple[str, str, str], list[tuple[int | None, str, int]]] = defaultdict(list)
    for t in new.tensors:
        o = old_by.get(t.name)
        if o is None or o.type == t.type:
            continue
        groups[(t.kind, o.type.name, t.type.name)].append((t.layer, t.name, t.bytes - o.bytes))
    out: list[TypeChange] = []
    for (kind, a, b), items in groups.items():
        layered = [(lay, d) for lay, _, d in items if lay is not None]
        for lay, name, d in items:
            if lay is None:
                out.append(TypeChange(name, a, b, 1, d))
        if layered:
            layers = {lay for lay, _ in layered}
            pattern = f"blk.{format_layers(layers)}.{kind}"
            out.append(TypeChange(pattern, a, b, len(layered), sum(d for _, d in layered)))
    return sorted(out, key=lambda c: (c.pattern.split(".")[-2:], c.pattern))


def _scalar_fields(lr: LoadedRecipe) -> dict[str, str]:
    r = lr.recipe
    data = {"description": r.description}
    for section in ("model", "calibration", "evaluation", "measure"):
        obj = getattr(r, section)
        if obj is None:
            continue
        for k, v in obj.model_dump(mode="json", exclude_none=True).items():
            data[f"{section}.{k}"] = str(v)
    return data


def diff_recipes(old: LoadedRecipe, new: LoadedRecipe) -> RecipeDiff:
    """Compare two versions of a recipe (each planned against its own inventory)."""
    old_r, new_r = old.recipe, new.recipe
    of, nf = _scalar_fields(old), _scalar_fields(new)
    fields = [
        (k, of.get(k, ""), nf.get(k, ""))
        for k in sorted(of.keys() | nf.keys())
        if of.get(k) != nf.get(k)
    ]
    rules = _diff_rules("rules", old_r.rules, new_r.rules)
    old_res, new_res = Resolver(old), Resolver(new)
    targets: list[TargetDiff] = []
    names = list(old_r.targets) + [n for n in new_r.targets if n not in old_r.targets]
    for name in names:
        ot, nt = old_r.targets.get(name), new_r.targets.get(name)
        if nt is None:
            targets.append(TargetDiff(name, "removed", old_res.plan(name), None))
            continue
        if ot is None:
            targets.append(TargetDiff(name, "added", None, new_res.plan(name)))
            continue
        rules += _diff_rules(f"targets.{name}.rules", ot.rules, nt.rules)
        op, np_ = old_res.plan(name), new_res.plan(name)
        changes = group_changes(op, np_)
        base = (ot.extends or ot.base or "", nt.extends or nt.base or "")
        td = TargetDiff(
            name,
            "changed" if changes or op.file_size != np_.file_size else "same",
            op,
            np_,
            changes,
            base if base[0] != base[1] else None,
        )
        targets.append(td)
    return RecipeDiff(new_r.name, old_r.version, new_r.version, fields, rules, targets)


# -- rendering --------------------------------------------------------------------------------


def _rule_text(r: Rule) -> str:
    s = f"`{r.match}`"
    if r.layers:
        s += f" layers `{r.layers}`"
    s += f" → `{r.type}`"
    if r.note:
        s += f" — {r.note}"
    return s


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def _signed_mb(n: int) -> str:
    return f"{'+' if n >= 0 else '−'}{abs(n) / 1e6:,.2f} MB"


def render_markdown(d: RecipeDiff) -> str:
    lines = [f"### `{d.name}`: {d.old_version} → {d.new_version}", ""]
    if d.empty:
        lines.append("No changes.")
        return "\n".join(lines) + "\n"
    if d.version_warning:
        lines += [f"> **Warning:** {d.version_warning}", ""]
    if d.fields:
        lines += ["| key | old | new |", "|---|---|---|"]
        lines += [f"| `{k}` | {a or '—'} | {b or '—'} |" for k, a, b in d.fields]
        lines.append("")
    if d.rules:
        lines.append("**Rules**")
        lines.append("")
        for c in d.rules:
            if c.kind == "added" and c.new:
                lines.append(f"- added in `{c.where}`: {_rule_text(c.new)}")
            elif c.kind == "removed" and c.old:
                lines.append(f"- removed from `{c.where}`: {_rule_text(c.old)}")
            elif c.old and c.new:
                lines.append(f"- changed in `{c.where}`: {_rule_text(c.old)} ⇒ {_rule_text(c.new)}")
            else:
                lines.append(f"- reordered: `{c.where}`")
        lines.append("")
    lines += [
        "| target | status | size | Δ size | bpw | Δ bpw |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for t in d.targets:
        p = t.new or t.old
        assert p is not None
        dbpw = (t.new.bpw if t.new else 0) - (t.old.bpw if t.old else 0)
        lines.append(
            f"| {t.name} | {t.status} | {_mb(p.file_size)} | {_signed_mb(t.size_delta)} | "
            f"{p.bpw:.3f} | {dbpw:+.3f} |"
        )
    for t in d.targets:
        if not (t.changes or t.base_change):
            continue
        lines += [
            "",
            f"<details><summary><b>{t.name}</b>: {len(t.changes)} change(s), "
            f"{_signed_mb(t.size_delta)}</summary>",
            "",
        ]
        if t.base_change:
            lines.append(f"- base: `{t.base_change[0]}` → `{t.base_change[1]}`")
        for c in t.changes:
            lines.append(
                f"- `{c.pattern}`: {c.old.lower()} → {c.new.lower()} "
                f"({c.count} tensor{'s' if c.count != 1 else ''}, {_signed_mb(c.bytes_delta)})"
            )
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def render_text(d: RecipeDiff) -> str:
    out = [f"{d.name}: {d.old_version} -> {d.new_version}"]
    if d.empty:
        return out[0] + "\nno changes\n"
    if d.version_warning:
        out.append(f"warning: {d.version_warning}")
    for k, a, b in d.fields:
        out.append(f"  {k}: {a or '-'} -> {b or '-'}")
    for c in d.rules:
        if c.kind == "added" and c.new:
            out.append(f"  + {c.where}: {_rule_text(c.new).replace('`', '')}")
        elif c.kind == "removed" and c.old:
            out.append(f"  - {c.where}: {_rule_text(c.old).replace('`', '')}")
        elif c.old and c.new:
            out.append(
                f"  ~ {c.where}: {_rule_text(c.old).replace('`', '')} => "
                f"{_rule_text(c.new).replace('`', '')}"
            )
        else:
            out.append(f"  ~ {c.where}: reordered")
    for t in d.targets:
        p = t.new or t.old
        assert p is not None
        out.append(
            f"target {t.name}: {t.status}, {_mb(p.file_size)} ({_signed_mb(t.size_delta)}), "
            f"{p.bpw:.3f} bpw"
        )
        if t.base_change:
            out.append(f"    base: {t.base_change[0]} -> {t.base_change[1]}")
        for c in t.changes:
            out.append(f"    {c.pattern}: {c.old.lower()} → {c.new.lower()}")
    return "\n".join(out) + "\n"
