"""Recipe format v1: pydantic models, TOML loading with error locations, canonical dump, schema.

A recipe is one TOML file per model in ``registry/``. Loading reports the first problem as
``file:line: key.path: message`` (with a did-you-mean for misspelt keys and type names); dumping
writes one canonical form (tomli-w, ``#:schema`` header), so a load/dump round trip of a canonical
file is byte-identical and a pull-request diff shows only real changes.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import json
import os
import re
import tomllib
import types
import typing
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dynq import qtypes
from dynq.errors import QuantTypeError, RecipeError
from dynq.fsutil import atomic_write_text
from dynq.tomlpos import key_lines, line_of

SCHEMA_VERSION = 1
STOCK_PREFIX = "llama.cpp:"

_SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
_NAME = r"^[a-z0-9][a-z0-9._-]*$"
_TARGET = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SHA256 = r"^[0-9a-f]{64}$"
_LAYERS_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def parse_layers(spec: str) -> frozenset[int]:
    """Parse a layer range list: ``"0-3,58-61"`` or ``"5"``; ranges are inclusive."""
    out: set[int] = set()
    for part in spec.split(","):
        m = _LAYERS_PART.match(part)
        if not m:
            raise ValueError(
                f"bad layer range '{part.strip()}' in '{spec}' (expected e.g. '0-3,58')"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"layer range '{part.strip()}' runs backwards")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def format_layers(layers: set[int] | frozenset[int]) -> str:
    """The compact form of a set of layers: ``{0,1,2,3,7}`` -> ``"0-3,7"``."""
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(layers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


class FileRef(_Strict):
    """A data file, relative to the recipe (or absolute), pinned by its sha256."""

    path: str
    sha256: Annotated[str | None, Field(pattern=_SHA256)] = None
    note: str | None = None


class Model(_Strict):
    """The model a recipe quantizes."""

    arch: str = Field(description="GGUF architecture name, e.g. llama, gemma3, deepseek2")
    hf_repo: str | None = Field(default=None, description="the Hub repository of the original")
    revision: Annotated[str | None, Field(pattern=r"^[0-9a-f]{40}$")] = None
    source: str | None = Field(
        default=None,
        description="full-precision GGUF: a path (relative to the recipe), "
        "pypi:<distribution>/<file> or hf://<owner>/<repo>/<file>",
    )
    source_sha256: Annotated[str | None, Field(pattern=_SHA256)] = None
    source_quantized: bool = Field(
        default=False,
        description="the source GGUF is itself quantized; it is dequantized to F32 first",
    )
    inventory: str = Field(description="inventory JSON (or GGUF), relative to the recipe")
    chat_template: FileRef | None = Field(
        default=None,
        description="a Jinja chat template written into every output as tokenizer.chat_template",
    )
    note: str | None = None


class Calibration(_Strict):
    """The text an importance matrix is computed on, or an imported imatrix."""

    text: list[FileRef] = Field(default_factory=list)
    ctx: int = Field(default=512, ge=16)
    chunks: int = Field(default=64, ge=1)
    imatrix: FileRef | None = Field(default=None, description="import one made by llama-imatrix")
    note: str | None = None


class Evaluation(_Strict):
    """How targets are judged: KLD against the full-precision model on held-out text."""

    text: list[FileRef] = Field(default_factory=list)
    ctx: int = Field(default=512, ge=16)
    chunks: int = Field(default=32, ge=1)
    baselines: list[str] = Field(
        default_factory=list, description="llama.cpp stock mixes to compare against, e.g. Q4_K_M"
    )
    note: str | None = None

    @field_validator("baselines")
    @classmethod
    def _known_mixes(cls, v: list[str]) -> list[str]:
        for mix in v:
            _check_mix(mix)
        return v


class Measure(_Strict):
    """How ``dynq measure`` judges this model's tensors: its defaults (command-line flags win),
    and a note on what the measurement costs at this model's scale."""

    types: list[str] = Field(
        default_factory=list,
        description="candidate types: names, or 'default' (k-quants, legacy, IQ4_NL/XS) and "
        "'lowbit' (the 1-3 bit grid types); empty: 'default'",
    )
    probe_chunks: int = Field(default=2, ge=1, description="calibration chunks per exact probe")
    sample: int = Field(default=24, ge=0, description="(tensor, type) pairs checked exactly")
    note: str | None = None

    @field_validator("types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.lower() not in ("default", "lowbit"):
                _check_weight_type(t)
        return v


class Rule(_Strict):
    """Give matching tensors a type. ``match`` is a glob on the GGUF tensor name, or a regular
    expression after ``re:``; ``layers`` restricts it to layer ranges like ``"0-3,58-61"``."""

    match: str
    layers: str | None = None
    type: str
    note: str | None = None
    pin: bool | None = Field(default=None, description="tune never changes tensors this sets")

    @field_validator("match")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty pattern")
        if v.startswith("re:"):
            try:
                re.compile(v[3:])
            except re.error as e:
                raise ValueError(f"bad regular expression '{v[3:]}': {e}") from None
        elif v.count("[") != v.count("]"):
            raise ValueError(f"bad glob '{v}': unbalanced brackets")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str | None) -> str | None:
        if v is not None:
            parse_layers(v)
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        _check_weight_type(v)
        return v

    @cached_property
    def layer_set(self) -> frozenset[int] | None:
        return parse_layers(self.layers) if self.layers is not None else None

    @cached_property
    def qtype(self) -> qtypes.GGMLType:
        return qtypes.parse_type(self.type)

    def matches(self, name: str, layer: int | None) -> bool:
        """Whether this rule selects the tensor ``name`` (in ``layer``, None when not in one)."""
        if self.layer_set is not None and (layer is None or layer not in self.layer_set):
            return False
        if self.match.startswith("re:"):
            return _regex(self.match[3:]).fullmatch(name) is not None
        return _glob(self.match).fullmatch(name) is not None


@functools.cache
def _regex(p: str) -> re.Pattern[str]:
    return re.compile(p)


@functools.cache
def _glob(p: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(p))


class Target(_Strict):
    """One published file: a base type or a llama.cpp stock mix, then rules on top."""

    base: str | None = Field(default=None, description="type for every quantizable tensor")
    extends: str | None = Field(default=None, description="llama.cpp:<MIX>, e.g. llama.cpp:Q4_K_M")
    note: str | None = None
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("base")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is not None:
            _check_weight_type(v)
        return v

    @field_validator("extends")
    @classmethod
    def _extends(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.startswith(STOCK_PREFIX):
                raise ValueError(f"'{v}' must name a stock mix as '{STOCK_PREFIX}<MIX>'")
            _check_mix(v[len(STOCK_PREFIX) :])
        return v

    @model_validator(mode="after")
    def _one_base(self) -> Target:
        if (self.base is None) == (self.extends is None):
            raise ValueError("a target needs exactly one of 'base' or 'extends'")
        return self

    @property
    def mix(self) -> str | None:
        return self.extends[len(STOCK_PREFIX) :] if self.extends else None


def _check_weight_type(name: str) -> None:
    """A type name a weight can be stored as (ValueError otherwise, for pydantic)."""
    try:
        t = qtypes.parse_type(name)
    except QuantTypeError as e:
        raise ValueError(str(e)) from None
    if not t.storable:
        raise ValueError(f"{t.name} is not a storage type for weights")


def _check_mix(mix: str) -> None:
    from dynq.stock import MIXES

    if mix not in MIXES:
        close = difflib.get_close_matches(mix.upper(), MIXES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown llama.cpp mix '{mix}'{hint}")


class Recipe(_Strict):
    """A model's quantization recipe (format v1)."""

    schema_version: int = Field(description="recipe format version")
    name: Annotated[str, Field(pattern=_NAME, description="equals the file stem")]
    version: Annotated[str, Field(pattern=_SEMVER, description="the recipe's own semver")]
    description: str
    model: Model
    calibration: Calibration | None = None
    evaluation: Evaluation | None = None
    measure: Measure | None = None
    rules: list[Rule] = Field(default_factory=list, description="shared by every target")
    targets: dict[str, Target]

    @field_validator("schema_version")
    @classmethod
    def _schema_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} is newer than this dynq supports ({SCHEMA_VERSION}); "
                "upgrade dynq"
            )
        if v < 1:
            raise ValueError(f"schema_version must be >= 1, not {v}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: dict[str, Target]) -> dict[str, Target]:
        if not v:
            raise ValueError("a recipe needs at least one target")
        seen: dict[str, str] = {}
        for name in v:
            if not re.match(_TARGET, name):
                raise ValueError(f"bad target name '{name}' (letters, digits, '.', '_', '-')")
            if name.lower() in seen:
                raise ValueError(f"duplicate target '{name}' (same as '{seen[name.lower()]}')")
            seen[name.lower()] = name
        return v


# -- loading ----------------------------------------------------------------------------------


class LoadedRecipe:
    """A recipe with the file it came from (paths in it are relative to that file)."""

    def __init__(self, recipe: Recipe, path: Path, text: str) -> None:
        self.recipe = recipe
        self.path = path
        self.text = text

    @property
    def dir(self) -> Path:
        return self.path.parent

    def resolve(self, rel: str) -> Path:
        """A path named in the recipe, relative to the recipe file unless absolute."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.dir / p

    @cached_property
    def sha256(self) -> str:
        """sha256 of the canonical body (without the location-dependent ``#:schema`` line):
        the recipe's identity, whatever its formatting and wherever the file lies."""
        return hashlib.sha256(canonical_body(self.recipe).encode()).hexdigest()


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` from Recipe (for did-you-mean)."""
    tp: Any = Recipe
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(part)
            if f is None:
                return []
            tp = f.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def _error_message(err: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    loc = tuple(err["loc"])
    # pydantic appends the validator's model name for model-level errors; drop non-keys
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1]
        close = difflib.get_close_matches(str(key), _fields_at(loc[:-1]), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return loc, f"unknown key '{key}'{hint}"
    if kind == "missing":
        return loc, "required key missing"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "version":
        msg = "must be a semantic version like 1.0.0"
    if kind in {"string_type", "int_type", "int_parsing", "bool_type", "dict_type", "list_type"}:
        msg = f"{msg}, got {err.get('input')!r}"
    return loc, msg


def parse_recipe(text: str, path: Path) -> Recipe:
    """Validate recipe text; errors are RecipeError('file:line: key.path: message')."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # Python < 3.14 has no e.lineno: the position is at the end of the message
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(e))
        where = f"{path}:{m.group(1)}" if m else f"{path}"
        msg = str(e)[: m.start()] if m else str(e)
        raise RecipeError(f"{where}: malformed TOML: {msg}") from None
    sv = data.get("schema_version")
    if isinstance(sv, int) and sv > SCHEMA_VERSION:
        lines = key_lines(text)
        raise RecipeError(
            f"{path}:{lines.get(('schema_version',), 1)}: schema_version: {sv} is newer than "
            f"this dynq supports ({SCHEMA_VERSION}); upgrade dynq"
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        loc, msg = _error_message(e.errors()[0])
        line = line_of(key_lines(text), loc)
        where = f"{path}:{line}" if line else str(path)
        key = _fmt_loc(loc)
        raise RecipeError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}") from None
    if recipe.name != path.stem:
        line = line_of(key_lines(text), ("name",))
        raise RecipeError(
            f"{path}:{line}: name: '{recipe.name}' must equal the file stem '{path.stem}'"
        )
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> LoadedRecipe:
    """Read and validate a recipe file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{p}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: cannot read recipe: {e}") from None
    return LoadedRecipe(parse_recipe(text, p), p, text)


def comment_line(text: str) -> int | None:
    """First line holding a comment other than the ``#:schema`` header: the canonical form
    cannot keep comments, so writers refuse such a file rather than drop them."""
    # A '#' outside a quoted span starts a comment (recipes need no multi-line strings).
    for n, line in enumerate(text.splitlines(), 1):
        if n == 1 and line.startswith("#:schema"):
            continue
        in_str: str | None = None
        i = 0
        while i < len(line):
            c = line[i]
            if in_str:
                if c == "\\" and in_str == '"':
                    i += 2
                    continue
                if c == in_str:
                    in_str = None
            elif c in "\"'":
                in_str = c
            elif c == "#":
                return n
            i += 1
    return None


# -- canonical dump ---------------------------------------------------------------------------


def recipe_data(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data in canonical key order, without unset optional keys."""
    return recipe.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {
        "schema_version": recipe.schema_version
    }


def _ordered(recipe: Recipe) -> dict[str, Any]:
    data = recipe_data(recipe)
    order = list(Recipe.model_fields)
    return {k: data[k] for k in order if k in data}


def schema_header(path: Path | None) -> str:
    """``#:schema`` and a newline, pointing at the repository's schema relative to the
    recipe's folder; empty where no ``schemas/recipe.schema.json`` is found above it (a
    recipe outside a registry checkout: a path to nothing would only mislead editors)."""
    if path is not None:
        d = path.resolve().parent
        for up in (d, *d.parents):
            schema = up / "schemas" / "recipe.schema.json"
            if schema.exists():
                return "#:schema " + os.path.relpath(schema, d).replace(os.sep, "/") + "\n"
    return ""


def canonical_body(recipe: Recipe) -> str:
    """The canonical TOML without the ``#:schema`` line: what the recipe's sha256 is of."""
    return tomli_w.dumps(_ordered(recipe))


def dump_recipe(recipe: Recipe, path: Path | None = None) -> str:
    """The canonical TOML text of a recipe."""
    return schema_header(path) + canonical_body(recipe)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write a recipe canonically, atomically (temp file + rename); re-validates first."""
    text = dump_recipe(recipe, path)
    parse_recipe(text, path)  # never write what we could not read back
    atomic_write_text(path, text)


# -- schema -----------------------------------------------------------------------------------


def json_schema() -> str:
    """The JSON Schema of the recipe format, as checked in under schemas/."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dynq recipe"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
