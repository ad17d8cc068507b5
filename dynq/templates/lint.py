"""Flag template constructs llama.cpp's template engines cannot run, by walking jinja2's AST.

Each finding names the engine it breaks, the line and column, and a rewrite that works in
every engine. What each engine lacks comes from ``engines.py`` (read from their sources).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from jinja2 import nodes

from dynq.templates.engines import ENGINES, JINJA2_GLOBALS, JINJA2_LOOP_ATTRS, Args, Engine
from dynq.templates.report import Finding

# rewrites that work in every engine (and in full Jinja), for the usual gaps
METHOD_HINTS = {
    "find": "use `sub in s` (or split on `sub`) instead of str.find",
    "rfind": "use `sub in s` (or split on `sub`) instead of str.rfind",
    "index": "use `sub in s` / `x in list` instead of .index()",
    "count": "use `s.split(sub) | length - 1` instead of str.count",
    "join": "use the filter: `items | join(sep)`",
    "values": "iterate `d.items()` and use the second element, or `d | dictsort`",
    "rsplit": "`s.rsplit(sep, 1)[0]` → `s.split(sep)[:-1] | join(sep)`; "
    "`s.rsplit(sep, 1)[-1]` → `s.split(sep)[-1]`",
    "splitlines": "use `s.split('\\n')`",
    "format": "concatenate with `~`",
    "insert": "build a new list with `+`",
    "update": "use a namespace and `{% set ns.key = value %}`",
    "setdefault": "use `d.get(key, default)`",
    "removeprefix": "use `s[n:]` after `s.startswith(prefix)`",
    "removesuffix": "use `s[:-n]` after `s.endswith(suffix)`",
    "isdigit": "compare against the digits explicitly, or precompute in the application",
}
FILTER_HINTS = {
    "first": "use `x[0]`",
    "strip": "use the `trim` filter or the `.strip()` method",
    "trim": "use the `.strip()` method",
    "replace": "use the `.replace(old, new)` method",
    "reverse": "use `x[::-1]`",
    "capitalize": "use the `.capitalize()` method",
    "title": "use the `.title()` method",
    "lstrip": "use the `.lstrip()` method",
    "rstrip": "use the `.rstrip()` method",
    "abs": "use `x if x >= 0 else -x`",
    "unique": "deduplicate in the application, or keep a namespace list and test `in`",
    "escape": "drop it (chat templates are not HTML), or `.replace('<', '&lt;')`…",
    "e": "drop it (chat templates are not HTML), or `.replace('<', '&lt;')`…",
    "sum": "accumulate in a namespace variable in a loop",
    "float": "keep the value numeric in the application",
    "items": "use the `.items()` method",
    "dictsort": "use `.items()` (order of insertion)",
}
TEST_HINTS = {
    "undefined": "use `is not defined`",
    "odd": "use `x % 2 == 1`",
    "even": "use `x % 2 == 0`",
    "divisibleby": "use `x % n == 0`",
    "equalto": "use `==`",
    "eq": "use `==`",
    "ne": "use `!=`",
    "lt": "use `<`",
    "le": "use `<=`",
    "gt": "use `>`",
    "ge": "use `>=`",
    "in": "use the `in` operator",
    "callable": "test `is defined` instead",
    "lower": "use `x == x.lower()`",
    "upper": "use `x == x.upper()`",
    "sameas": "use `==`",
}
STATEMENT_KEYWORDS = {
    "With": "with",
    "Include": "include",
    "Import": "import",
    "FromImport": "from",
    "Extends": "extends",
    "Block": "block",
    "ScopedEvalContextModifier": "autoescape",
    "EvalContextModifier": "autoescape",
    "ExprStmt": "do",
}


class _Locator:
    """Columns for AST nodes (jinja2 records lines only): the next match of a pattern at or
    after the node's line, searching each pattern forward so repeated constructs on one line
    get their own columns."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\n", source)]
        self.cursor: dict[str, int] = {}

    def find(self, pattern: str, lineno: int | None) -> tuple[int | None, int | None]:
        if lineno is None:
            return None, None
        start = self.line_starts[min(max(lineno, 1), len(self.line_starts)) - 1]
        pos = max(start, self.cursor.get(pattern, 0))
        m = re.compile(pattern).search(self.source, pos)
        if m is None:
            m = re.compile(pattern).search(self.source, start)
            if m is None:
                return lineno, None
        self.cursor[pattern] = m.end()
        line = self.source.count("\n", 0, m.start()) + 1
        col = m.start() - self.line_starts[line - 1] + 1
        return line, col


def _matching_paren(source: str, open_idx: int) -> int | None:
    """Index of the ')' closing the '(' at ``open_idx`` (quotes skipped), or None."""
    depth = 0
    quote = ""
    i = open_idx
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _const_str(node: nodes.Node | None) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _arity_problem(spec: Args, n_pos: int, kwargs: list[str]) -> str | None:
    if n_pos < spec.min or (spec.max is not None and n_pos > spec.max):
        want = (
            f"{spec.min}"
            if spec.max == spec.min
            else f"{spec.min} to {spec.max}"
            if spec.max is not None
            else f"at least {spec.min}"
        )
        return f"takes {want} positional argument(s), given {n_pos}"
    if spec.kwargs is not None:
        bad = [k for k in kwargs if k not in spec.kwargs]
        if bad:
            allowed = ", ".join(sorted(spec.kwargs)) or "none"
            return f"does not take keyword argument(s) {', '.join(bad)} (it takes: {allowed})"
    return None


class Linter:
    def __init__(self, source: str, tree: nodes.Template, engines: list[str]) -> None:
        self.source = source
        self.tree = tree
        self.engines = [ENGINES[e] for e in engines]
        self.loc = _Locator(source)
        self.findings: list[Finding] = []
        self._postfix_cursor: dict[str, int] = {}
        self._placed: dict[tuple[int, str], tuple[int | None, int | None]] = {}

    def add(
        self,
        node: nodes.Node,
        pattern: str,
        engine: Engine | None,
        message: str,
        suggestion: str | None,
        severity: str = "error",
        code: str = "unsupported",
    ) -> None:
        key = (id(node), pattern)  # one place per node, whichever engines it breaks
        if key not in self._placed:
            self._placed[key] = self.loc.find(pattern, getattr(node, "lineno", None))
        line, col = self._placed[key]
        self.findings.append(
            Finding(
                severity=severity,
                line=line,
                col=col,
                engine=engine.name if engine else None,
                message=message,
                suggestion=suggestion,
                code=code,
            )
        )

    def run(self) -> list[Finding]:
        for m in re.finditer(r"\{%[-+]?\s*raw\b", self.source):
            line = self.source.count("\n", 0, m.start()) + 1
            col = m.start() - self.loc.line_starts[line - 1] + 1
            for e in self.engines:
                self.findings.append(
                    Finding(
                        "error",
                        line,
                        col,
                        e.name,
                        "{% raw %} is not supported",
                        "write the text with string literals, e.g. {{ '{{' }}",
                        "statement",
                    )
                )
        for node in _walk(self.tree):
            kind = type(node).__name__
            handler = getattr(self, f"_{kind}", None)
            if handler is not None:
                handler(node)
            if kind in STATEMENT_KEYWORDS:
                kw = STATEMENT_KEYWORDS[kind]
                for e in self.engines:
                    if kind not in e.statements:
                        self.add(
                            node,
                            rf"\{{%[-+]?\s*{kw}\b",
                            e,
                            f"{{% {kw} %}} is not supported",
                            "inline it",
                            code="statement",
                        )
        self.findings.sort(key=lambda f: (f.line or 0, f.col or 0, f.engine or ""))
        return self.findings

    # -- node handlers ----------------------------------------------------------------------
    def _Call(self, node: nodes.Call) -> None:
        kwargs = [k.key for k in node.kwargs]
        n_pos = len(node.args)
        dyn = node.dyn_args is not None or node.dyn_kwargs is not None
        if isinstance(node.node, nodes.Getattr):
            recv = node.node.node
            if isinstance(recv, nodes.Name) and recv.name in ("loop", "self", "caller", "ns"):
                return  # loop.cycle(...) is checked as an attribute; macros/namespaces skip
            self._method(node, node.node.attr, recv, n_pos, kwargs, dyn)
        elif isinstance(node.node, nodes.Name):
            name = node.node.name
            if name == "loop":
                for e in self.engines:
                    if not e.recursive_loops:
                        self.add(
                            node,
                            r"\bloop\s*\(",
                            e,
                            "recursive loop call loop(...) is not supported",
                            "flatten the recursion (recursive for-loops are unsupported)",
                        )
            elif name in JINJA2_GLOBALS:
                for e in self.engines:
                    if name not in e.globals:
                        hint = {
                            "dict": "use a literal {'key': value}",
                            "cycler": "use `[a, b][loop.index0 % 2]`",
                            "joiner": "test `loop.first` and emit the separator yourself",
                        }.get(name, "")
                        self.add(
                            node,
                            rf"\b{name}\s*\(",
                            e,
                            f"global function {name}() is not defined",
                            hint or None,
                            code="global",
                        )

    def _method(
        self,
        node: nodes.Call,
        name: str,
        recv: nodes.Node,
        n_pos: int,
        kwargs: list[str],
        dyn: bool,
    ) -> None:
        pat = rf"\.\s*{re.escape(name)}\s*\("
        for e in self.engines:
            spec = e.methods.get(name)
            if name == "join" and e.name == "jinja":
                spec = None  # 'sep'.join(list): value.cpp:666
            if spec is None:
                why = e.not_implemented.get("join()") if name == "join" else None
                msg = f"method .{name}() is not supported" + (f" ({why})" if why else "")
                self.add(node, pat, e, msg, METHOD_HINTS.get(name), code="method")
                continue
            if not dyn:
                prob = _arity_problem(spec, n_pos, kwargs)
                if prob:
                    hint = METHOD_HINTS.get(name)
                    if name == "split" and n_pos == 2:
                        hint = (
                            "`s.split(sep, 1)[1]` → `s.split(sep)[1:] | join(sep)`; "
                            "`s.split(sep, 1)[0]` → `s.split(sep)[0]`"
                        )
                    self.add(
                        node,
                        pat,
                        e,
                        f"method .{name}() {prob} ({spec.cite})",
                        hint,
                        code="method-args",
                    )
                    continue
            self._quirks(node, name, pat, e, n_pos, kwargs, recv=recv, args=node.args)

    def _quirks(
        self,
        node: nodes.Node,
        name: str,
        pat: str,
        e: Engine,
        n_pos: int,
        kwargs: list[str],
        recv: nodes.Node | None,
        args: list[nodes.Expr],
    ) -> None:
        """Known gaps inside supported methods/filters (cited from the sources)."""
        if e.name == "jinja":
            if name in ("split", "rsplit") and n_pos == 0:
                self.add(
                    node,
                    pat,
                    e,
                    f"{name}() without a separator splits on single spaces only, not on "
                    "runs of whitespace (value.cpp:746)",
                    f"give the separator: {name}(' ')",
                    severity="warning",
                    code="semantics",
                )
            if name == "replace" and n_pos == 3:
                self.add(
                    node,
                    pat,
                    e,
                    "replace() with a count is not implemented (value.cpp:801)",
                    "replace all occurrences, or split/join",
                    code="not-implemented",
                )
            if name == "tojson" and "sort_keys" in kwargs:
                val = next(
                    (k.value for k in getattr(node, "kwargs", []) if k.key == "sort_keys"), None
                )
                false = isinstance(val, nodes.Const) and not val.value
                self.add(
                    node,
                    pat,
                    e,
                    "tojson(sort_keys=...) is not implemented when true (value.cpp:258)",
                    "drop sort_keys",
                    severity="info" if false else "error",
                    code="not-implemented",
                )
            if name in ("selectattr", "rejectattr") and n_pos == 2:
                self.add(
                    node,
                    pat,
                    e,
                    f"{name}(attribute, test) is read as {name}(test, value): the attribute "
                    "name is taken for a test (value.cpp:314-330)",
                    "loop with `{% if item[attribute] is test %}` instead",
                    code="semantics",
                )
            if name == "map" and n_pos > 0:
                self.add(
                    node,
                    pat,
                    e,
                    "map('filter') is not implemented, only map(attribute=...) (value.cpp:1131)",
                    "loop and apply the filter to each item",
                    code="not-implemented",
                )
            if name == "format":
                fmt = _const_str(recv)
                if fmt is not None and ("%" in fmt or re.search(r"\{[^}]", fmt)):
                    self.add(
                        node,
                        pat,
                        e,
                        "format() only supports '{}' placeholders "
                        "(value.cpp:825-859); printf-style '%s' is left in the text",
                        "concatenate with `~`",
                        code="not-implemented",
                    )
        if name == "tojson" and n_pos > 0 and isinstance(node, nodes.Filter):
            self.add(
                node,
                pat,
                e,
                "tojson with positional arguments: the first is ensure_ascii in llama.cpp's "
                "engine (value.cpp:244) and transformers, indent in minja (minja.hpp:2728)",
                "use keywords: tojson(indent=2)",
                severity="warning",
                code="semantics",
            )
        if (
            name in ("startswith", "endswith")
            and args
            and isinstance(args[0], nodes.Tuple | nodes.List)
        ):
            self.add(
                node,
                pat,
                e,
                f"{name}() with a tuple of prefixes is not supported",
                f"or-chain: `s.{name}(a) or s.{name}(b)`",
                code="method-args",
            )
        if name in ("select", "reject", "selectattr", "rejectattr"):
            idx = 0 if name in ("select", "reject") else 1
            test = _const_str(args[idx]) if len(args) > idx else None
            allowed = e.select_tests if e.select_tests is not None else e.tests
            if test is not None and test not in allowed:
                why = (
                    "minja looks tests up as globals and has only equalto, ==, in (minja.hpp:2993)"
                    if e.name == "minja"
                    else "no such test (value.cpp:475-600)"
                )
                self.add(
                    node,
                    rf"['\"]{re.escape(test)}['\"]",
                    e,
                    f"{name}() with test '{test}' fails: {why}",
                    "loop with `{% if %}` instead",
                    code="test",
                )

    def _Filter(self, node: nodes.Filter) -> None:
        self._filter(
            node,
            node.name,
            node.args,
            [k.key for k in node.kwargs],
            node.dyn_args is not None or node.dyn_kwargs is not None,
            rf"\|\s*{re.escape(node.name)}\b",
        )

    def _FilterBlock(self, node: nodes.FilterBlock) -> None:
        pass  # its Filter child is visited (with node=None)

    def _filter(
        self, node: nodes.Filter, name: str, args: list, kwargs: list[str], dyn: bool, pat: str
    ) -> None:
        if node.node is None:  # {% filter name %}
            pat = rf"\{{%[-+]?\s*filter\s+{re.escape(name)}\b"
        for e in self.engines:
            spec = e.filters.get(name)
            if spec is None:
                why = e.not_implemented.get(name)
                msg = f"filter '{name}' is not supported" + (f" ({why})" if why else "")
                self.add(node, pat, e, msg, FILTER_HINTS.get(name), code="filter")
                continue
            if name in e.not_implemented:
                self.add(
                    node,
                    pat,
                    e,
                    f"filter '{name}' is not implemented ({e.not_implemented[name]})",
                    FILTER_HINTS.get(name),
                    code="not-implemented",
                )
                continue
            if not dyn:
                prob = _arity_problem(spec, len(args), kwargs)
                if prob:
                    hint = FILTER_HINTS.get(name)
                    if name == "default" and not args:
                        hint = "give the default explicitly: `default('')`"
                    if name == "tojson":
                        hint = "use `tojson` or `tojson(indent=N)` only"
                    self.add(
                        node,
                        pat,
                        e,
                        f"filter '{name}' {prob} ({spec.cite})",
                        hint,
                        code="filter-args",
                    )
                    continue
            self._quirks(node, name, pat, e, len(args), kwargs, recv=node.node, args=args)

    def _Test(self, node: nodes.Test) -> None:
        pat = rf"\bis\s+(?:not\s+)?{re.escape(node.name)}\b"
        for e in self.engines:
            if node.name in e.not_implemented:
                self.add(
                    node,
                    pat,
                    e,
                    f"test '{node.name}' is not implemented ({e.not_implemented[node.name]})",
                    TEST_HINTS.get(node.name),
                    code="test",
                )
            elif node.name not in e.tests:
                self.add(
                    node,
                    pat,
                    e,
                    f"test '{node.name}' is not supported",
                    TEST_HINTS.get(node.name),
                    code="test",
                )
            elif not e.tests_take_args and (node.args or node.kwargs):
                self.add(
                    node,
                    pat,
                    e,
                    f"test '{node.name}' with an argument is not supported "
                    "(tests take no arguments)",
                    TEST_HINTS.get(node.name),
                    code="test",
                )

    def _Getattr(self, node: nodes.Getattr) -> None:
        self._postfix_on_call(node)
        if node.attr.startswith("_"):
            self.add(
                node,
                rf"\.\s*{re.escape(node.attr)}\b",
                None,
                f"attribute '{node.attr}' reaches for Python internals",
                "remove it: templates get plain data",
                code="security",
            )
            return
        if isinstance(node.node, nodes.Name) and node.node.name == "loop":
            attr = node.attr
            if attr not in JINJA2_LOOP_ATTRS:
                return
            for e in self.engines:
                if attr not in e.loop_attrs:
                    hint = {
                        "cycle": "use `[a, b][loop.index0 % 2]`",
                        "changed": "keep the previous value in a namespace",
                        "depth": "count depth in a namespace",
                        "depth0": "count depth in a namespace",
                    }.get(attr)
                    self.add(
                        node,
                        rf"\bloop\s*\.\s*{attr}\b",
                        e,
                        f"loop.{attr} is not supported",
                        hint,
                        code="loop",
                    )

    def _postfix_on_call(self, node: nodes.Getattr | nodes.Getitem) -> None:
        """minja parses '.x', '[i]' after names, literals and method calls, but not after a
        function or macro call: ``f(x).strip()`` fails, ``(f(x)).strip()`` works
        (minja.hpp:2193-2250: the call is parsed after the postfix loop)."""
        call = node.node
        if not (isinstance(call, nodes.Call) and isinstance(call.node, nodes.Name)):
            return
        minja = next((e for e in self.engines if e.name == "minja"), None)
        if minja is None:
            return
        name = call.node.name
        # the first unwrapped call of this name at or after the node's line
        pat = re.compile(rf"\b{re.escape(name)}\s*\(")
        first = self.loc.line_starts[min(max(call.lineno, 1), len(self.loc.line_starts)) - 1]
        pos = max(first, self._postfix_cursor.get(name, 0))
        for m in pat.finditer(self.source, pos):
            end = _matching_paren(self.source, m.end() - 1)
            rest = self.source[end + 1 :].lstrip() if end is not None else ""
            if rest[:1] in (".", "["):
                break
        else:
            return  # wrapped in parentheses: (f(x)).y parses
        self._postfix_cursor[name] = m.end()
        line = self.source.count("\n", 0, m.start()) + 1
        col = m.start() - self.loc.line_starts[line - 1] + 1
        self.findings.append(
            Finding(
                "error",
                line,
                col,
                minja.name,
                f"'{rest[:1]}' right after the call {name}(...) does not parse "
                "(minja.hpp:2193-2250: nothing may follow a function call)",
                f"wrap the call in parentheses: ({name}(...)){rest[:1]}…",
                "syntax",
            )
        )

    def _Getitem(self, node: nodes.Getitem) -> None:
        self._postfix_on_call(node)
        key = _const_str(node.arg)
        if key is not None and key.startswith("_"):
            self.add(
                node,
                rf"\[\s*['\"]{re.escape(key)}",
                None,
                f"item '{key}' reaches for Python internals",
                "remove it: templates get plain data",
                code="security",
            )

    def _For(self, node: nodes.For) -> None:
        if node.recursive:
            for e in self.engines:
                if not e.recursive_loops:
                    self.add(
                        node,
                        r"\brecursive\b",
                        e,
                        "recursive for-loops are not supported",
                        "flatten the data in the application",
                        code="statement",
                    )

    def _CallBlock(self, node: nodes.CallBlock) -> None:
        if node.args:  # {% call(x) macro() %}: minja parses one expression, caller takes none
            for e in self.engines:
                if e.name == "minja":
                    self.add(
                        node,
                        r"\{%[-+]?\s*call\s*\(",
                        e,
                        "call block with caller arguments {% call(...) %} is not supported "
                        "(minja.hpp:2498-2503, 1644)",
                        "pass the values to the macro instead of through caller()",
                        code="statement",
                    )

    def _Compare(self, node: nodes.Compare) -> None:
        if len(node.ops) > 1:  # both engines compare pairwise, left to right
            for e in self.engines:
                self.add(
                    node,
                    r"(==|!=|<=|>=|<|>)",
                    e,
                    "chained comparison a < b < c is evaluated as (a < b) < c, which fails "
                    "comparing a boolean with a number (checked live in both engines)",
                    "write `a < b and b < c`",
                    code="operator",
                )

    def _Pow(self, node: nodes.Pow) -> None:
        self._op(node, "**", r"\*\*", "multiply it out")

    def _FloorDiv(self, node: nodes.FloorDiv) -> None:
        self._op(node, "//", r"//", "use `(a / b) | int`")

    def _op(self, node: nodes.Node, op: str, pat: str, hint: str) -> None:
        for e in self.engines:
            if op not in e.operators:
                self.add(node, pat, e, f"operator '{op}' is not supported", hint, code="operator")

    def _Mod(self, node: nodes.Mod) -> None:
        if _const_str(node.left) is not None:
            for e in self.engines:
                self.add(
                    node,
                    r"['\"]\s*%(?![}])",
                    e,
                    "printf-style '%' string formatting is not supported (% is numeric only)",
                    "concatenate with `~`",
                    code="operator",
                )


def lint(source: str, tree: nodes.Template, engines: list[str]) -> list[Finding]:
    return Linter(source, tree, engines).run()
