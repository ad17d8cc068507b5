"""The recipe editor's model: a working copy of a recipe, undo/redo, re-planning and saving.

Plain Python (no Textual), so that every editing rule is tested without a terminal. The screens
call these methods and redraw from ``Editor.plan(target)``.

An edit never leaves the working copy broken: the new recipe is validated (pydantic) and the
affected targets are planned before it replaces the current one; a failure raises
``RecipeError`` with dynq's one-line message and changes nothing.
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from dynq import qtypes
from dynq.diff import RecipeDiff, diff_recipes
from dynq.errors import DynqError, RecipeError
from dynq.inventory import Inventory
from dynq.plan import Plan, PlannedTensor, Resolver
from dynq.recipe import (
    LoadedRecipe,
    Recipe,
    Rule,
    Target,
    comment_line,
    dump_recipe,
    format_layers,
    load_recipe,
    recipe_data,
    save_recipe,
)


class Scope(enum.Enum):
    """What a type change becomes in the recipe."""

    TENSORS = "tensors"  # a rule for exactly the selected tensors
    KIND = "kind"  # a rule for their kind in every layer
    LAYERS = "layers"  # a rule for their kind in a layer range


@dataclass(frozen=True)
class Snapshot:
    recipe: Recipe
    description: str
    resolver: Resolver
    plans: dict[str, Plan]


def validation_message(path: Path, e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}"


class Editor:
    """A recipe being edited: the saved file, the working copy, its plans and its history."""

    def __init__(self, loaded: LoadedRecipe, inventory: Inventory | None = None) -> None:
        self.path = loaded.path
        self.saved = loaded
        resolver = Resolver(loaded, inventory)
        self.inventory = resolver.inventory
        self.recipe = loaded.recipe
        self._resolver = resolver
        self._saved_resolver = resolver
        self._plans: dict[str, Plan] = {}
        self._saved_plans = self._plans  # the same recipe until the first edit
        self._undo: list[Snapshot] = []
        self._redo: list[Snapshot] = []
        self._by_name = self.inventory.by_name()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Editor:
        return cls(load_recipe(path))

    # -- state -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def targets(self) -> list[str]:
        return list(self.recipe.targets)

    @property
    def dirty(self) -> bool:
        return recipe_data(self.recipe) != recipe_data(self.saved.recipe)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_description(self) -> str | None:
        return self._undo[-1].description if self._undo else None

    @property
    def redo_description(self) -> str | None:
        return self._redo[-1].description if self._redo else None

    def text(self) -> str:
        """The canonical TOML of the working copy."""
        return dump_recipe(self.recipe, self.path)

    def current(self) -> LoadedRecipe:
        """The working copy as a LoadedRecipe (paths resolve beside the file)."""
        return LoadedRecipe(self.recipe, self.path, self.text())

    def plan(self, target: str) -> Plan:
        """The working copy's Plan of ``target`` (cached until the next edit)."""
        if target not in self._plans:
            self._plans[target] = self._resolver.plan(target)
        return self._plans[target]

    def prefetch(self) -> None:
        """Plan every target of the working copy (from a worker thread: safe against edits
        made meanwhile, whose Plans are never overwritten with stale ones)."""
        resolver, plans = self._resolver, self._plans
        for target in self.targets:
            if target not in plans and resolver is self._resolver:
                plans.setdefault(target, resolver.plan(target))

    def saved_plan(self, target: str) -> Plan | None:
        """The Plan of ``target`` as saved on disk (None for a target the file lacks)."""
        if target not in self.saved.recipe.targets:
            return None
        if target not in self._saved_plans:
            self._saved_plans[target] = self._saved_resolver.plan(target)
        return self._saved_plans[target]

    def tensor(self, target: str, name: str) -> PlannedTensor:
        return self.plan(target).by_name()[name]

    # -- applying changes ------------------------------------------------------------------
    def _resolver_for(self, recipe: Recipe) -> Resolver:
        loaded = LoadedRecipe(recipe, self.path, dump_recipe(recipe, self.path))
        return self._resolver.for_recipe(loaded)

    def _apply(
        self, recipe: Recipe, description: str, check: Iterable[str], only: str | None = None
    ) -> None:
        """Validate ``recipe``, plan ``check`` targets, then make it the working copy.

        ``only``: the edit changed nothing but this target's rules, so the other targets'
        Plans stay valid."""
        try:
            recipe = Recipe.model_validate(recipe_data(recipe))
        except ValidationError as e:
            raise RecipeError(validation_message(self.path, e)) from None
        resolver = self._resolver_for(recipe)
        plans = {t: resolver.plan(t) for t in check}  # raises RecipeError: nothing changes
        if only is not None:
            plans = {t: p for t, p in self._plans.items() if t != only} | plans
        self._undo.append(self._snapshot(description))
        self._redo.clear()
        self._set(recipe, resolver, plans)

    def _snapshot(self, description: str) -> Snapshot:
        return Snapshot(self.recipe, description, self._resolver, dict(self._plans))

    def _set(self, recipe: Recipe, resolver: Resolver, plans: dict[str, Plan]) -> None:
        self.recipe = recipe
        self._resolver = resolver
        self._plans = plans

    def undo(self) -> str | None:
        """Go back one edit; returns its description (None when there is nothing to undo)."""
        if not self._undo:
            return None
        snap = self._undo.pop()
        self._redo.append(self._snapshot(snap.description))
        self._set(snap.recipe, snap.resolver, snap.plans)
        return snap.description

    def redo(self) -> str | None:
        if not self._redo:
            return None
        snap = self._redo.pop()
        self._undo.append(self._snapshot(snap.description))
        self._set(snap.recipe, snap.resolver, snap.plans)
        return snap.description

    # -- rules -----------------------------------------------------------------------------
    def rules_for(
        self, target: str, tensors: list[PlannedTensor], scope: Scope, layers: str | None = None
    ) -> list[tuple[str, str | None]]:
        """The (match, layers) keys of the rules that select ``tensors`` in ``scope``."""
        quant = [t for t in tensors if t.rule != "not quantized"]
        if not quant:
            names = ", ".join(t.name for t in tensors[:2])
            raise RecipeError(f"{self.path}: {names}: llama.cpp never quantizes this tensor")
        out: list[tuple[str, str | None]] = []
        by_kind: dict[str, set[int]] = defaultdict(set)
        for t in quant:
            if t.layer is None:
                out.append((t.name, None))
            else:
                by_kind[t.kind].add(t.layer)
        for kind, lays in by_kind.items():
            match = f"blk.*.{kind}"
            if scope is Scope.TENSORS:
                key = (match, format_layers(lays))
            elif scope is Scope.KIND:
                key = (match, None)
            else:
                key = (match, layers)
            if not self._glob_is_exact(match, kind):
                match = "re:" + _regex_for_kind(kind)
                key = (match, key[1])
            out.append(key)
        return out

    def _glob_is_exact(self, match: str, kind: str) -> bool:
        rule = Rule(match=match, type="f32")
        return all(t.kind == kind for t in self.inventory.tensors if rule.matches(t.name, t.layer))

    def set_type(
        self,
        target: str,
        names: list[str],
        qtype: str,
        scope: Scope = Scope.TENSORS,
        layers: str | None = None,
        note: str | None = None,
    ) -> str:
        """Give tensors ``names`` of ``target`` the type ``qtype`` through target rules."""
        planned = [self.tensor(target, n) for n in names]
        return self._set_types(target, [(planned, qtype)], scope, layers, note)

    def step(
        self,
        target: str,
        names: list[str],
        steps: int,
        scope: Scope = Scope.TENSORS,
        layers: str | None = None,
    ) -> str:
        """Move tensors ``steps`` rungs up (+) or down (-) the type ladder."""
        groups: dict[str, list[PlannedTensor]] = defaultdict(list)
        for n in names:
            t = self.tensor(target, n)
            if t.rule == "not quantized":
                continue
            new = qtypes.ladder_step(t.fallback_from or t.type, steps)
            groups[new.key].append(t)
        if not groups:
            return self._set_types(
                target, [([self.tensor(target, n) for n in names], "f32")], scope, layers, None
            )
        return self._set_types(
            target,
            [(ts, k) for k, ts in groups.items()],
            scope,
            layers,
            None,
            verb="up" if steps > 0 else "down",
        )

    def _set_types(
        self,
        target: str,
        groups: list[tuple[list[PlannedTensor], str]],
        scope: Scope,
        layers: str | None,
        note: str | None,
        verb: str | None = None,
    ) -> str:
        tgt = self.recipe.targets[target]
        rules = list(tgt.rules)
        described: list[str] = []
        for tensors, qtype in groups:
            try:
                qt = qtypes.parse_type(qtype)
            except DynqError as e:
                raise RecipeError(f"{self.path}: type: {e}") from None
            for match, lay in self.rules_for(target, tensors, scope, layers):
                try:
                    idx = next(
                        i for i, r in enumerate(rules) if (r.match, r.layers) == (match, lay)
                    )
                except StopIteration:
                    idx = None
                keep_note = rules[idx].note if idx is not None else None
                if idx is not None and _overridden(rules[idx + 1 :], tensors):
                    rules.pop(idx)  # a later rule would win: the new one goes last
                    idx = None
                fields = {
                    "match": match,
                    "layers": lay,
                    "type": qt.key,
                    "note": note if note is not None else keep_note,
                }
                try:
                    rule = Rule(**fields)
                except ValidationError as e:
                    raise RecipeError(validation_message(self.path, e)) from None
                if idx is None:
                    rules.append(rule)
                else:
                    rules[idx] = rule
                described.append(f"{match}{f' [{lay}]' if lay else ''} → {qt.key}")
        new_target = tgt.model_copy(update={"rules": rules})
        recipe = self._with_target(target, new_target)
        what = ", ".join(described)
        desc = f"{target}: {'step ' + verb + ': ' if verb else ''}{what}"
        self._apply(recipe, desc, [target], only=target)
        return desc

    def _with_target(self, target: str, new: Target) -> Recipe:
        targets = dict(self.recipe.targets)
        targets[target] = new
        return self.recipe.model_copy(update={"targets": targets})

    def rule_at(self, target: str, label: str) -> Rule | None:
        """The rule a Plan label names (``rules[2]``, ``targets.T.rules[0]``), else None."""
        where, idx = _parse_label(label)
        if where is None:
            return None
        rules = self.recipe.rules if where == "" else self.recipe.targets[where].rules
        return rules[idx] if idx < len(rules) else None

    def set_note(self, target: str, label: str, note: str | None) -> str:
        """Set the note of the rule that ``label`` names (a tensor's ``rule``)."""
        where, idx = _parse_label(label)
        if where is None:
            raise RecipeError(
                f"{self.path}: {label} is not a rule of this recipe; give the tensor a type "
                "first, then a note"
            )
        note = (note or "").strip() or None
        if where == "":
            rules = list(self.recipe.rules)
            rules[idx] = rules[idx].model_copy(update={"note": note})
            recipe = self.recipe.model_copy(update={"rules": rules})
            check: list[str] = []
        else:
            tgt = self.recipe.targets[where]
            rules = list(tgt.rules)
            rules[idx] = rules[idx].model_copy(update={"note": note})
            recipe = self._with_target(where, tgt.model_copy(update={"rules": rules}))
            check = [where]
        desc = f"note of {label}"
        self._apply(recipe, desc, check, only=where or None)
        return desc

    def delete_rule(self, target: str, label: str) -> str:
        where, idx = _parse_label(label)
        if where is None:
            raise RecipeError(f"{self.path}: {label} is not a rule of this recipe")
        if where == "":
            rules = [r for i, r in enumerate(self.recipe.rules) if i != idx]
            recipe = self.recipe.model_copy(update={"rules": rules})
            check = self.targets
        else:
            tgt = self.recipe.targets[where]
            rules = [r for i, r in enumerate(tgt.rules) if i != idx]
            recipe = self._with_target(where, tgt.model_copy(update={"rules": rules}))
            check = [where]
        desc = f"delete {label}"
        self._apply(recipe, desc, check, only=where or None)
        return desc

    def all_rules(self, target: str) -> list[tuple[str, Rule]]:
        """The rules that apply to ``target``, in resolution order, with their labels."""
        out = [(f"rules[{i}]", r) for i, r in enumerate(self.recipe.rules)]
        out += [
            (f"targets.{target}.rules[{i}]", r)
            for i, r in enumerate(self.recipe.targets[target].rules)
        ]
        return out

    def bump_version(self) -> str:
        """Raise the patch version (outputs changed): ``0.1.0`` -> ``0.1.1``."""
        old = self.recipe.version
        core = old.split("+")[0].split("-")[0]
        major, minor, patch = core.split(".")
        new = f"{major}.{minor}.{int(patch) + 1}"
        desc = f"version {old} → {new}"
        self._apply(self.recipe.model_copy(update={"version": new}), desc, [])
        return desc

    # -- saving ----------------------------------------------------------------------------
    def diff(self) -> RecipeDiff:
        """The change since the last save, as ``dynq diff`` computes it."""
        return diff_recipes(self.saved, self.current())

    @property
    def reformats(self) -> bool:
        """Whether the file on disk is not in canonical form (saving also reformats it)."""
        return self.saved.text != dump_recipe(self.saved.recipe, self.path)

    def check_save(self) -> None:
        """Raise RecipeError when saving would lose something (comments, someone else's edit)."""
        try:
            on_disk = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            on_disk = None
        except OSError as e:
            raise RecipeError(f"{self.path}: cannot read: {e}") from None
        if on_disk is not None and on_disk != self.saved.text:
            raise RecipeError(
                f"{self.path}: changed on disk since it was opened; not overwritten "
                "(reopen it to see the other change)"
            )
        line = comment_line(self.saved.text)
        if line is not None:
            raise RecipeError(
                f"{self.path}:{line}: the file has comments, which the canonical form does not "
                "keep; move them into 'note' fields (or run dynq fmt) first"
            )

    def save(self) -> None:
        """Write the working copy canonically and atomically; it becomes the saved state."""
        self.check_save()
        save_recipe(self.recipe, self.path)
        loaded = load_recipe(self.path)
        self.saved = loaded
        self._saved_resolver = self._resolver
        self._saved_plans = dict(self._plans)


def _parse_label(label: str) -> tuple[str | None, int]:
    """``rules[2]`` -> ("", 2); ``targets.T.rules[0]`` -> ("T", 0); others -> (None, -1)."""
    if label.startswith("rules[") and label.endswith("]"):
        return "", int(label[6:-1])
    if label.startswith("targets.") and label.endswith("]") and ".rules[" in label:
        head, _, idx = label[len("targets.") :].rpartition(".rules[")
        return head, int(idx[:-1])
    return None, -1


def _overridden(later: list[Rule], tensors: list[PlannedTensor]) -> bool:
    return any(r.matches(t.name, t.layer) for r in later for t in tensors)


def _regex_for_kind(kind: str) -> str:
    import re

    return r"blk\.\d+\." + re.escape(kind)
