"""The resolver: recipe + inventory + target -> Plan (every tensor's type, the rule that chose it,
any fallback, its bytes, and the exact size of the output file).

Resolution order for each tensor: the target's base type (or the llama.cpp stock mix it extends),
then the recipe's shared rules, then the target's rules; a later match overrides an earlier one.
Tensors llama.cpp never quantizes (1-D norms and biases, …) keep their stored type. A chosen type
whose block does not divide the row length falls back exactly as llama-quantize does, and the
Plan says so. A rule that matches no tensor is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from dynq import layout, qtypes, stock
from dynq.errors import RecipeError
from dynq.inventory import Inventory, TensorInfo, load_inventory
from dynq.provenance import ImatrixRef, default_imatrix_ref, output_metadata
from dynq.recipe import LoadedRecipe, Rule, Target
from dynq.tomlpos import key_lines, line_of

# Metadata estimate for inventories without a GGUF header (safetensors): the tokenizer dominates;
# measured on Gemma 3's GGUF: 6,511,143 bytes of key/values for a 262,144-token vocabulary.
_EST_BYTES_PER_TOKEN = 25
_EST_FIXED_BYTES = 8192


@dataclass(frozen=True, slots=True)
class PlannedTensor:
    """One tensor of a Plan."""

    name: str
    shape: tuple[int, ...]
    layer: int | None
    kind: str
    source_type: str
    type: qtypes.GGMLType
    rule: str
    note: str | None
    fallback_from: qtypes.GGMLType | None
    bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def bpw(self) -> float:
        return self.bytes * 8 / self.n_elements

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "type": self.type.name,
            "bytes": self.bytes,
            "rule": self.rule,
            "note": self.note,
            "fallback": (
                {"from": self.fallback_from.name, "to": self.type.name}
                if self.fallback_from
                else None
            ),
        }


@dataclass
class Plan:
    """Every tensor's type and bytes for one target, and the predicted file size."""

    recipe: str
    recipe_version: str
    target: str
    arch: str
    tensors: list[PlannedTensor]
    metadata_bytes: int
    file_size: int
    exact: bool = field(default=True)

    @cached_property
    def tensor_bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @cached_property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bpw(self) -> float:
        """Bits per weight over all tensors (as llama-quantize reports it)."""
        return self.tensor_bytes * 8 / self.n_elements

    def by_name(self) -> dict[str, PlannedTensor]:
        return {t.name: t for t in self.tensors}

    def type_histogram(self) -> dict[str, tuple[int, int]]:
        """type name -> (tensor count, bytes), largest share first."""
        count: Counter[str] = Counter()
        size: Counter[str] = Counter()
        for t in self.tensors:
            count[t.type.name] += 1
            size[t.type.name] += t.bytes
        return {k: (count[k], size[k]) for k, _ in size.most_common()}

    @property
    def fallbacks(self) -> list[PlannedTensor]:
        return [t for t in self.tensors if t.fallback_from is not None]

    def to_json(self) -> dict[str, object]:
        return {
            "recipe": self.recipe,
            "recipe_version": self.recipe_version,
            "target": self.target,
            "arch": self.arch,
            "tensors": [t.to_json() for t in self.tensors],
            "totals": {
                "tensors": len(self.tensors),
                "parameters": self.n_elements,
                "tensor_bytes": self.tensor_bytes,
                "metadata_bytes": self.metadata_bytes,
                "file_size": self.file_size,
                "file_size_exact": self.exact,
                "bpw": round(self.bpw, 4),
                "fallbacks": len(self.fallbacks),
                "types": {
                    k: {"tensors": c, "bytes": b} for k, (c, b) in self.type_histogram().items()
                },
            },
        }


class Resolver:
    """Plans the targets of one loaded recipe against its inventory (loaded once)."""

    def __init__(self, loaded: LoadedRecipe, inventory: Inventory | None = None) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.inventory = inventory if inventory is not None else self._load_inventory()
        if self.inventory.arch != self.recipe.model.arch:
            raise self._error(
                ("model", "arch"),
                f"'{self.recipe.model.arch}' but the inventory is of a '{self.inventory.arch}' "
                "model",
            )
        self._quantizable = {
            t.name: stock.is_quantizable(t, self.inventory.arch) for t in self.inventory.tensors
        }
        self._stock: dict[tuple[str, bool], dict[str, stock.StockChoice]] = {}

    def for_recipe(self, loaded: LoadedRecipe) -> Resolver:
        """A resolver for another version of the recipe (an edit) on the same inventory,
        sharing what depends only on the inventory: quantizability and stock-mix choices."""
        other = Resolver.__new__(Resolver)
        other.loaded, other.recipe, other.inventory = loaded, loaded.recipe, self.inventory
        if other.inventory.arch != other.recipe.model.arch:
            raise other._error(
                ("model", "arch"),
                f"'{other.recipe.model.arch}' but the "
                f"inventory is of a '{other.inventory.arch}' model",
            )
        other._quantizable, other._stock = self._quantizable, self._stock
        return other

    def _stock_types(self, mix: str, imatrix: bool) -> dict[str, stock.StockChoice]:
        key = (mix, imatrix)
        if key not in self._stock:
            inv = self.inventory
            self._stock[key] = stock.stock_types(
                mix, inv, imatrix=imatrix, hparams=inv.hparams or None
            )
        return self._stock[key]

    def _load_inventory(self) -> Inventory:
        path = self.loaded.resolve(self.recipe.model.inventory)
        if not path.exists():
            raise self._error(("model", "inventory"), f"file not found: {path}")
        return load_inventory(path)

    @cached_property
    def _lines(self) -> dict[tuple[str | int, ...], int]:
        return key_lines(self.loaded.text)

    def _error(self, loc: tuple[str | int, ...], msg: str) -> RecipeError:
        line = line_of(self._lines, loc)
        where = f"{self.loaded.path}:{line}" if line else str(self.loaded.path)
        key = ""
        for part in loc:
            key += f"[{part}]" if isinstance(part, int) else ("." if key else "") + part
        return RecipeError(f"{where}: {key}: {msg}")

    # -- rules -----------------------------------------------------------------------------
    def _check_rule(self, rule: Rule, loc: tuple[str | int, ...]) -> list[TensorInfo]:
        inv = self.inventory
        if rule.layer_set is not None and inv.n_layers and max(rule.layer_set) >= inv.n_layers:
            raise self._error(
                (*loc, "layers"),
                f"'{rule.layers}' is outside the model (layers 0-{inv.n_layers - 1})",
            )
        hits = [t for t in inv.tensors if rule.matches(t.name, t.layer)]
        if not hits:
            raise self._error((*loc, "match"), self._no_match_message(rule))
        quant = [t for t in hits if self._quantizable[t.name]]
        if rule.qtype.is_quantized or rule.qtype.gguf != qtypes.T.F32:
            exact = not any(c in rule.match for c in "*?[") and not rule.match.startswith("re:")
            frozen = [t for t in hits if not self._quantizable[t.name]]
            if frozen and (exact or not quant):
                raise self._error(
                    (*loc, "type"),
                    f"'{frozen[0].name}' is a float-only tensor ({frozen[0].type}, "
                    f"shape {list(frozen[0].shape)}) and cannot take {rule.qtype.name}",
                )
            return quant
        return hits

    def _no_match_message(self, rule: Rule) -> str:
        msg = f"'{rule.match}'"
        if rule.layers is not None:
            msg += f" in layers '{rule.layers}'"
        msg += " matches no tensor of the inventory"
        kinds = sorted({t.kind for t in self.inventory.tensors})
        if not rule.match.startswith("re:"):
            tail = rule.match.split(".", 2)[-1] if rule.match.startswith("blk.") else rule.match
            close = difflib.get_close_matches(tail, kinds, n=1)
            if close and not fnmatch.fnmatchcase(close[0], tail):
                head = rule.match[: len(rule.match) - len(tail)]
                msg += f" (did you mean '{head}{close[0]}'?)"
        return msg

    # -- resolution ------------------------------------------------------------------------
    def target(self, name: str) -> Target:
        targets = self.recipe.targets
        if name not in targets:
            close = difflib.get_close_matches(name, list(targets), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(
                f"{self.loaded.path}: targets: no target '{name}'{hint}; "
                f"the recipe has: {', '.join(targets)}"
            )
        return targets[name]

    def plan(self, target_name: str, imatrix: ImatrixRef | bool | None = True) -> Plan:
        """The Plan of one target. ``imatrix`` is what the build records of its imatrix (it
        sizes the metadata): True for the recipe's default, None or False for none."""
        target = self.target(target_name)
        inv = self.inventory
        chosen: dict[str, tuple[qtypes.GGMLType, str, str | None]] = {}
        pre_fallback: dict[str, qtypes.GGMLType] = {}

        if imatrix is True:
            imatrix = default_imatrix_ref(self.loaded)
        if target.mix is not None:
            for tname, choice in self._stock_types(target.mix, bool(imatrix)).items():
                if self._quantizable[tname]:
                    chosen[tname] = (choice.type, target.extends or "", choice.reason)
                    if choice.fallback_from is not None:
                        pre_fallback[tname] = choice.fallback_from
        else:
            base = qtypes.parse_type(target.base or "")
            for t in inv.tensors:
                if self._quantizable[t.name]:
                    chosen[t.name] = (base, "base", None)

        ordered: list[tuple[Rule, tuple[str | int, ...], str]] = [
            (r, ("rules", i), f"rules[{i}]") for i, r in enumerate(self.recipe.rules)
        ] + [
            (r, ("targets", target_name, "rules", i), f"targets.{target_name}.rules[{i}]")
            for i, r in enumerate(target.rules)
        ]
        for rule, loc, label in ordered:
            for t in self._check_rule(rule, loc):
                chosen[t.name] = (rule.qtype, label, rule.note)
                pre_fallback.pop(t.name, None)

        tensors: list[PlannedTensor] = []
        for t in inv.tensors:
            if t.name in chosen:
                want, rule, note = chosen[t.name]
                got = stock.fallback(want, t.shape[0])
                fb = pre_fallback.get(t.name) or (want if got != want else None)
            else:
                got, rule, note, fb = qtypes.parse_type(t.type), "not quantized", None, None
            tensors.append(
                PlannedTensor(
                    name=t.name,
                    shape=t.shape,
                    layer=t.layer,
                    kind=t.kind,
                    source_type=t.type,
                    type=got,
                    rule=rule,
                    note=note,
                    fallback_from=fb,
                    bytes=got.nbytes(t.shape),
                )
            )
        meta = self._metadata_bytes(target_name, imatrix or None)
        size = layout.file_size(
            [meta], [(t.name, len(t.shape), t.bytes) for t in tensors], inv.alignment
        )
        return Plan(
            recipe=self.recipe.name,
            recipe_version=self.recipe.version,
            target=target_name,
            arch=inv.arch,
            tensors=tensors,
            metadata_bytes=meta,
            file_size=size,
            exact=inv.exact,
        )

    def _metadata_bytes(self, target_name: str, imatrix: ImatrixRef | None) -> int:
        """Key/value bytes of the output: the source's, with dynq's keys set or replaced."""
        new = output_metadata(self.loaded, target_name, imatrix)
        inv = self.inventory
        if inv.exact:
            kept = sum(n for k, n in inv.metadata_bytes.items() if k not in new)
        else:
            vocab = next((t.shape[-1] for t in inv.tensors if t.name == "token_embd.weight"), 0)
            kept = _EST_FIXED_BYTES + _EST_BYTES_PER_TOKEN * vocab
        return kept + sum(layout.kv_size(k, v) for k, v in new.items())

    def plan_all(self) -> list[Plan]:
        return [self.plan(name) for name in self.recipe.targets]


def plan_target(loaded: LoadedRecipe, target: str) -> Plan:
    return Resolver(loaded).plan(target)
