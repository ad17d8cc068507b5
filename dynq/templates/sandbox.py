"""A bounded Jinja sandbox: render untrusted chat templates without letting them hurt us.

jinja2's ``ImmutableSandboxedEnvironment`` already refuses attribute access to Python internals
(``__class__``, ``__globals__``, …) and mutation of values passed in; this module adds the limits a
template checker needs on top:

- **time**: a render has a budget (1 s by default; a check's renders 4 s together). Every hook
  below checks the deadline, and a watchdog thread raises ``RenderTimeout`` asynchronously in
  the rendering thread when the budget is spent inside code no hook sees;
- **loop iterations**: every ``{% for %}`` iterable is wrapped (an AST rewrite before compiling)
  so that the iterations of one render are counted and capped;
- **size**: string/list results of operators, calls, filters, ``~`` concatenation and block
  captures are capped, as is the output, which is streamed and counted;
- **internals**: unsafe attributes raise at once (stock jinja2 returns a silent Undefined);
  ``lipsum`` is removed from the globals.

The limits raise ``RenderLimit``, a ``BaseException``, so that no ``except Exception`` inside
jinja2 or a template's own machinery can swallow them.
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer


@dataclass(frozen=True)
class Limits:
    """What one render may use."""

    seconds: float = 1.0  # one render
    total_seconds: float = 4.0  # all the renders of one check together
    max_output: int = 4 * 1024 * 1024  # characters of rendered text
    max_string: int = 4 * 1024 * 1024  # characters/items of any intermediate string or list
    max_iterations: int = 100_000  # loop iterations, all loops of one render together
    max_int_arg: int = 4 * 1024 * 1024  # integer arguments to calls and filters


DEFAULT_LIMITS = Limits()


class RenderLimit(BaseException):
    """A render went over a limit (time, size, iterations) or reached for Python internals."""


class RenderTimeout(RenderLimit):
    """Raised by the watchdog in the rendering thread."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args or ("render took longer than the time limit",))


class RaisedException(Exception):
    """The template called ``raise_exception(message)``: it refuses this conversation."""


_ITER = "__dynq_iter"
_CONCAT = "__dynq_concat"


class _Instrument(NodeTransformer):
    """Route loop iterables and ``~`` through counting, size-checking helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.Name(_ITER, "load", lineno=node.lineno),
            [node.iter],
            [],
            None,
            None,
            lineno=node.lineno,
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.Name(_CONCAT, "load", lineno=node.lineno),
            list(node.nodes),
            [],
            None,
            None,
            lineno=node.lineno,
        )


class _Budget:
    def __init__(self, limits: Limits, deadline: float | None = None) -> None:
        self.limits = limits
        self.start = time.monotonic()
        own = self.start + limits.seconds
        self.deadline = min(own, deadline) if deadline is not None else own
        self.iterations = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderTimeout(
                f"render took longer than {self.limits.seconds:g} s (or the check's renders "
                f"together longer than {self.limits.total_seconds:g} s)"
                if self.deadline < self.start + self.limits.seconds - 1e-3
                else f"render took longer than {self.limits.seconds:g} s"
            )

    def size(self, value: object, what: str) -> object:
        if isinstance(value, int) and value.bit_length() > 1_000_000:
            raise RenderLimit(f"{what} produced an integer of {value.bit_length():,} bits")
        if isinstance(value, str | list | tuple | dict) and len(value) > self.limits.max_string:
            raise RenderLimit(
                f"{what} produced {len(value):,} characters/items "
                f"(limit {self.limits.max_string:,})"
            )
        return value

    def int_args(self, args: Iterable[object], what: str) -> None:
        for a in args:
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > self.limits.max_int_arg:
                raise RenderLimit(f"{what}: argument {a} is too large")

    def estimate(self, n: int, what: str) -> None:
        """Refuse a single C-level operation before it builds an oversized result."""
        if n > self.limits.max_string:
            raise RenderLimit(
                f"{what} would build about {n:,} characters (limit {self.limits.max_string:,})"
            )

    def format_string(self, fmt: str, what: str) -> None:
        """Widths/precisions in a format string ('%999999999d', '{:>999999999}')."""
        for digits in re.findall(r"\d{7,}", fmt):
            self.estimate(int(digits), what)


def _strlen(items: object) -> int:
    if isinstance(items, str):
        return len(items)
    if isinstance(items, list | tuple):
        return sum(len(x) if isinstance(x, str) else 24 for x in items)
    return 0


def _precheck(b: _Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Estimate the result size of the string operations that amplify their input in one C
    call (str.replace, join, padding, indent, expandtabs, tojson) and refuse oversized ones.
    ``args[0]`` is the receiver (methods) or the filtered value (filters)."""
    if not args:
        return
    s0 = args[0]
    rest = args[1:]
    what = f"{name}()"
    if name == "replace" and isinstance(s0, str) and len(rest) >= 2:
        old, new = str(rest[0]), str(rest[1])
        b.estimate(len(s0) + s0.count(old) * max(len(new) - len(old), 0), what)
    elif name == "join":
        if isinstance(s0, str) and rest:  # 'sep'.join(items)
            items, sep = rest[0], s0
        else:  # items | join(sep)
            items = s0
            sep = str(rest[0]) if rest else str(kwargs.get("d", ""))
        n = len(items) if hasattr(items, "__len__") else 0
        b.estimate(_strlen(items) + n * len(sep), what)
    elif name in ("center", "ljust", "rjust", "zfill") and rest and isinstance(rest[0], int):
        b.estimate(int(rest[0]), what)
    elif name == "expandtabs" and isinstance(s0, str):
        size = rest[0] if rest and isinstance(rest[0], int) else kwargs.get("tabsize", 8)
        b.estimate(len(s0) + s0.count("\t") * int(size), what)
    elif name == "indent" and isinstance(s0, str):
        width = rest[0] if rest else kwargs.get("width", 4)
        w = len(width) if isinstance(width, str) else int(width) if isinstance(width, int) else 4
        b.estimate(len(s0) + (s0.count("\n") + 1) * w, what)
    elif name == "tojson":
        indent = rest[1] if len(rest) > 1 else kwargs.get("indent")
        if isinstance(indent, int) and indent > 16:
            raise RenderLimit(f"tojson(indent={indent}) is too large (limit 16)")
    elif name == "format" and isinstance(s0, str):
        b.format_string(s0, what)
    elif name in ("translate", "maketrans", "format_map"):
        raise RenderLimit(f"{name}() is not allowed in the template sandbox")


def _json_default(o: Any) -> Any:
    if isinstance(o, Undefined):
        return None
    if isinstance(o, Iterable) and not isinstance(o, str | bytes | dict):
        return list(o)  # map()/select() results: arrays in llama.cpp's engines
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as transformers and llama.cpp give it to chat templates (no HTML escaping)."""
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_json_default,
    )


class _Generation(Extension):
    """``{% generation %}…{% endgeneration %}`` (transformers' assistant-mask markers): the
    body renders as is, as in transformers, minja and llama.cpp (parser.cpp:207)."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise RaisedException(str(message))


def _strftime_now(fmt: str) -> str:
    # a fixed instant, so that renders are reproducible (llama.cpp uses the current local time)
    return time.strftime(str(fmt), time.gmtime(1_750_000_000))


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox chat templates are rendered in; see the module docstring for the limits."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        # transformers renders chat templates with trim_blocks, lstrip_blocks and loopcontrols
        super().__init__(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _Generation]
        )
        self.limits = limits
        self._local = threading.local()
        self.globals.pop("lipsum", None)
        self.globals.update(
            raise_exception=_raise_exception,
            strftime_now=_strftime_now,
            **{_ITER: self._iter, _CONCAT: self._concat},
        )
        self.filters["tojson"] = _tojson
        # |safe is a no-op in llama.cpp's engines (value.cpp:941, minja.hpp:2853); jinja2's
        # Markup would HTML-escape whatever is concatenated to it
        self.filters["safe"] = str
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}

    # -- the budget of the render in progress (per thread) --------------------------------
    @property
    def budget(self) -> _Budget:
        b = getattr(self._local, "budget", None)
        if b is None:
            b = self._local.budget = _Budget(self.limits)
        return b

    def _guard_filter(self, name: str, f: Any) -> Any:
        skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0

        @functools.wraps(f)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            b = self.budget
            b.tick()
            b.int_args(args[skip:], f"filter {name}")
            b.int_args(kwargs.values(), f"filter {name}")
            _precheck(b, name, args[skip:], kwargs)
            return b.size(f(*args, **kwargs), f"filter {name}")

        return guarded

    def _iter(self, iterable: Any) -> Iterator[Any]:
        b = self.budget
        b.tick()
        if isinstance(iterable, Undefined):
            iterable = iter(iterable)  # raises for strict undefineds, empty otherwise
        for n, item in enumerate(iterable):
            b.iterations += 1
            if b.iterations > self.limits.max_iterations:
                raise RenderLimit(f"more than {self.limits.max_iterations:,} loop iterations")
            if n % 64 == 0:
                b.tick()
            yield item

    def _concat(self, *parts: Any) -> str:
        b = self.budget
        b.tick()
        strs = [str(p) for p in parts]
        if sum(map(len, strs)) > self.limits.max_string:
            raise RenderLimit(
                f"'~' would build a string over {self.limits.max_string:,} characters"
            )
        return "".join(strs)

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins captured blocks ({% set %}…{% endset %}, macros, filter blocks) with a cap."""
        b = self.budget
        strs = list(parts)
        if sum(map(len, strs)) > self.limits.max_string:
            raise RenderLimit(f"a block would capture over {self.limits.max_string:,} characters")
        b.tick()
        return "".join(strs)

    # -- sandbox hooks --------------------------------------------------------------------
    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        b = self.budget
        b.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * max(n, 0) > self.limits.max_string:
                        raise RenderLimit(
                            f"'*' would build {len(seq) * n:,} characters/items "
                            f"(limit {self.limits.max_string:,})"
                        )
        if operator == "**" and isinstance(right, int | float) and isinstance(left, int | float):
            bits = abs(right) * max(int(abs(left)).bit_length(), 1)
            if abs(right) > 1024 or bits > 1_000_000:
                raise RenderLimit(f"'**' with exponent {right} is too large")
        if operator == "%" and isinstance(left, str):
            b.format_string(left, "'%' formatting")
        return b.size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        b = __self.budget
        b.tick()
        b.int_args(args, "call")
        b.int_args(kwargs.values(), "call")
        recv = getattr(__obj, "__self__", None)
        if isinstance(recv, str | list | dict):
            _precheck(b, getattr(__obj, "__name__", ""), (recv, *args), kwargs)
        return b.size(super().call(__context, __obj, *args, **kwargs), "call")

    def wrap_str_format(self, value: Any) -> Any:
        recv = getattr(value, "__self__", None)
        if isinstance(recv, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            self.budget.format_string(recv, f"str.{value.__name__}()")
        return super().wrap_str_format(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.tick()
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # llama.cpp's engines let templates grow their own lists (jinja value.cpp:1144-1163,
        # minja.hpp:1496-1509); each render gets its own deep copy of the inputs
        if isinstance(obj, list) and attr in ("append", "pop", "insert"):
            return True
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    # -- compiling and rendering ----------------------------------------------------------
    def compile_template(self, source: str) -> Any:
        """Parse, instrument and compile ``source`` (raises TemplateSyntaxError)."""
        tree = _Instrument().visit(self.parse(source))
        # jinja2 folds constant expressions (filters on literals) while compiling: bound it too
        self._local.budget = _Budget(self.limits)
        with _Watchdog(self.limits.seconds + 0.25):
            return self.from_string(tree)  # type: ignore[arg-type]

    def render(self, template: Any, context: dict[str, Any], deadline: float | None = None) -> str:
        """Render with the limits: RenderLimit/RenderTimeout, RaisedException, or jinja2's
        own exceptions propagate. A render gets ``limits.seconds``, and stops earlier at
        ``deadline`` (time.monotonic()), which lets several renders share a total budget."""
        budget = self._local.budget = _Budget(self.limits, deadline)
        out: list[str] = []
        total = 0
        with _Watchdog(max(budget.deadline - time.monotonic(), 0.0) + 0.25):
            gen = template.generate(context)
            try:
                for piece in gen:
                    total += len(piece)
                    if total > self.limits.max_output:
                        raise RenderLimit(
                            f"output over {self.limits.max_output:,} characters (limit)"
                        )
                    out.append(piece)
            finally:
                gen.close()
        return "".join(out)


class _Watchdog:
    """Raise RenderTimeout in this thread if the block runs longer than ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tid = threading.get_ident()
        self.lock = threading.Lock()
        self.active = False
        self.fired = False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        with self.lock:
            if self.active:
                self.fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.tid), ctypes.py_object(RenderTimeout)
                )

    def __enter__(self) -> _Watchdog:
        self.active = True
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        with self.lock:
            self.active = False
            if self.fired:  # clear an exception still pending (fired as the block ended)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.tid), None)
