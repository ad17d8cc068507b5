"""What llama.cpp's two template engines implement, read from their sources.

This is test data with provenance, not a specification: every entry cites the file and line it
was read from. The linter (``lint.py``) flags a template construct for an engine when the
engine lacks it here.

``jinja`` — llama.cpp's own engine, ``common/jinja/`` (introduced by PR #18462), as vendored by
llama-cpp-python 0.3.36 (``vendor/llama.cpp``; paths below relative to ``common/jinja/``).
Methods and filters share one per-type builtin table (``value.cpp``): ``x.f(a)`` and ``x | f(a)``
both find ``f`` in the table of ``x``'s type (``runtime.cpp:302-320``, ``member_expression``
at ``runtime.cpp:806-866``).

``minja`` — google/minja, ``include/minja/minja.hpp`` at commit
021c2293c187789ef13d56c6cfd89c9b134fd80f (2025-09-22), the engine llama.cpp used before PR
#18462 and which builds in the field still run. Methods are a fixed list per type
(``MethodCallExpr``, ``minja.hpp:1481-1611``: anything else is ``Unknown method``); filters,
tests used by ``select``/``selectattr`` and global functions all live in one globals table
(``Context::builtins``, ``minja.hpp:2722-3070``); ``is`` tests are a fixed list of names
without arguments (``minja.hpp:1334-1352``, parsed at ``minja.hpp:1966-1975``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANY = None  # no limit on positional arguments / any keyword arguments


@dataclass(frozen=True)
class Args:
    """Positional argument counts (receiver/input excluded) and accepted keyword names."""

    min: int = 0
    max: int | None = ANY
    kwargs: frozenset[str] | None = ANY  # None: any keyword; frozenset(): none
    cite: str = ""


def _kw(*names: str) -> frozenset[str]:
    return frozenset(names)


NO_KW = frozenset()


@dataclass(frozen=True)
class Engine:
    name: str
    title: str
    source: str
    methods: dict[str, Args]
    filters: dict[str, Args]
    tests: frozenset[str]
    tests_take_args: bool
    select_tests: frozenset[str] | None  # test names select()/selectattr() can use; None: tests
    globals: frozenset[str]  # of jinja2's default globals, those the engine has
    statements: frozenset[str]  # jinja2 node type names the engine can run
    recursive_loops: bool
    loop_attrs: frozenset[str]
    operators: frozenset[str]  # of '**' and '//'
    not_implemented: dict[str, str] = field(default_factory=dict)  # name: why (cited)


# jinja2's default globals (jinja2/defaults.py) — a template may call these without context
JINJA2_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})
JINJA2_LOOP_ATTRS = frozenset(
    {
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "cycle",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
        "changed",
    }
)

# -- llama.cpp common/jinja --------------------------------------------------------------------

_J_STR = "value.cpp:669-989 (value_string_t::get_builtins)"
_J_ARR = "value.cpp:1023-1251 (value_array_t::get_builtins)"
_J_OBJ = "value.cpp:1257-1350 (value_object_t::get_builtins)"
_J_NUM = "value.cpp:606-651 (value_int_t/value_float_t::get_builtins)"

JINJA = Engine(
    name="jinja",
    title="llama.cpp common/jinja",
    source="llama.cpp common/jinja/ (PR #18462), vendored by llama-cpp-python 0.3.36",
    methods={
        # strings, value.cpp:669-989
        "upper": Args(0, 0, cite="value.cpp:672"),
        "lower": Args(0, 0, cite="value.cpp:677"),
        "strip": Args(0, 1, _kw("chars"), "value.cpp:682"),
        "rstrip": Args(0, 1, _kw("chars"), "value.cpp:694"),
        "lstrip": Args(0, 1, _kw("chars"), "value.cpp:703"),
        "title": Args(0, 0, cite="value.cpp:712"),
        "capitalize": Args(0, 0, cite="value.cpp:717"),
        "startswith": Args(1, 1, NO_KW, "value.cpp:727 (ensure_vals<string, string>)"),
        "endswith": Args(1, 1, NO_KW, "value.cpp:733 (ensure_vals<string, string>)"),
        "split": Args(0, 2, cite="value.cpp:739-765 (ensure_count(1, 3) with the receiver)"),
        "rsplit": Args(0, 2, cite="value.cpp:766-793"),
        "replace": Args(2, 3, cite="value.cpp:794-824"),
        "format": Args(cite="value.cpp:825-859"),
        "int": Args(cite=_J_STR),
        "float": Args(cite=_J_STR),
        "string": Args(cite=_J_STR),
        "default": Args(cite=_J_STR),
        "slice": Args(cite=_J_STR),
        "safe": Args(cite=_J_STR),
        "tojson": Args(cite=_J_STR),
        "indent": Args(cite=_J_STR),
        "length": Args(0, 0, cite=_J_STR),
        # arrays, value.cpp:1023-1251
        "list": Args(cite=_J_ARR),
        "first": Args(cite=_J_ARR),
        "last": Args(cite=_J_ARR),
        "selectattr": Args(cite=_J_ARR),
        "select": Args(cite=_J_ARR),
        "rejectattr": Args(cite=_J_ARR),
        "reject": Args(cite=_J_ARR),
        "map": Args(cite=_J_ARR),
        "append": Args(1, 1, cite="value.cpp:1144"),
        "pop": Args(0, 1, cite="value.cpp:1155 (arrays only)"),
        "sort": Args(cite=_J_ARR),
        "reverse": Args(cite=_J_ARR),
        "min": Args(cite=_J_ARR),
        "max": Args(cite=_J_ARR),
        # objects, value.cpp:1257-1350
        "get": Args(1, 2, cite="value.cpp:1265"),
        "keys": Args(0, 0, cite="value.cpp:1281"),
        "values": Args(0, 0, cite="value.cpp:1290"),
        "items": Args(0, 0, cite="value.cpp:1299"),
        "dictsort": Args(cite=_J_OBJ),
        # numbers
        "abs": Args(0, 0, cite=_J_NUM),
    },
    filters={
        "default": Args(1, 2, cite="value.cpp:366-367 (ensure_count(2, 3) with the input)"),
        "d": Args(1, 2, cite="runtime.cpp:323-333 (alias of default)"),
        "upper": Args(0, 0, cite="value.cpp:672"),
        "lower": Args(0, 0, cite="value.cpp:677"),
        "strip": Args(0, 1, cite="value.cpp:682"),
        "trim": Args(0, 1, cite="runtime.cpp:323-333 (alias of strip)"),
        "rstrip": Args(0, 1, cite="value.cpp:694"),
        "lstrip": Args(0, 1, cite="value.cpp:703"),
        "title": Args(0, 0, cite="value.cpp:712"),
        "capitalize": Args(0, 0, cite="value.cpp:717"),
        "length": Args(0, 0, cite="value.cpp:722, 1051, 1319"),
        "count": Args(0, 0, cite="runtime.cpp:323-333 (alias of length)"),
        "split": Args(0, 2, cite="value.cpp:739"),
        "rsplit": Args(0, 2, cite="value.cpp:766"),
        "replace": Args(2, 3, cite="value.cpp:794"),
        "format": Args(cite="value.cpp:825"),
        "int": Args(cite="value.cpp:860, 614, 639"),
        "float": Args(cite="value.cpp:879, 618, 644"),
        "string": Args(cite="value.cpp:889, 1115, 1310"),
        "slice": Args(cite="value.cpp:910, 1056"),
        "safe": Args(cite="value.cpp:941"),
        "tojson": Args(
            0, 4, _kw("ensure_ascii", "indent", "separators", "sort_keys"), "value.cpp:242-265"
        ),
        "indent": Args(0, 3, _kw("width", "first", "blank"), "value.cpp:947-987"),
        "join": Args(0, 2, _kw("d", "attribute"), "value.cpp:1089-1114 (arrays)"),
        "list": Args(cite="value.cpp:1026 (arrays only)"),
        "first": Args(cite="value.cpp:1035 (arrays only)"),
        "last": Args(cite="value.cpp:1043 (arrays only)"),
        "selectattr": Args(1, 3, cite="value.cpp:1085, 296-364"),
        "select": Args(1, 3, cite="value.cpp:1086"),
        "rejectattr": Args(1, 3, cite="value.cpp:1087"),
        "reject": Args(1, 3, cite="value.cpp:1088"),
        "map": Args(0, ANY, _kw("attribute", "default"), "value.cpp:1125-1143"),
        "sort": Args(0, 3, _kw("reverse", "case_sensitive", "attribute"), "value.cpp:1164"),
        "reverse": Args(0, 0, cite="value.cpp:1189 (arrays only)"),
        "min": Args(cite="value.cpp:1196"),
        "max": Args(cite="value.cpp:1222"),
        "abs": Args(0, 0, cite=_J_NUM),
        "items": Args(0, 0, cite="value.cpp:1299"),
        "dictsort": Args(cite="value.cpp:1329"),
    },
    tests=frozenset(
        {
            "boolean",
            "callable",
            "odd",
            "even",
            "false",
            "true",
            "divisibleby",
            "string",
            "integer",
            "float",
            "number",
            "iterable",
            "sequence",
            "mapping",
            "lower",
            "upper",
            "none",
            "defined",
            "undefined",
            "eq",
            "equalto",
            "ge",
            "gt",
            "greaterthan",
            "lt",
            "lessthan",
            "ne",
            "in",
            "test",
            "sameas",
        }
    ),  # value.cpp:475-600 (global_builtins "test_is_*")
    tests_take_args=True,
    select_tests=None,  # selectattr looks up "test_is_" + name, value.cpp:321, 343
    globals=frozenset({"range", "dict", "namespace"}),  # value.cpp:413-472
    statements=frozenset(
        {
            "For",
            "If",
            "Macro",
            "CallBlock",
            "FilterBlock",
            "Assign",
            "AssignBlock",
            "Break",
            "Continue",
        }
    ),  # parser.cpp:132-215 ("Unknown statement" otherwise)
    recursive_loops=False,  # parser.cpp:295-322: no 'recursive' after the iterable
    loop_attrs=frozenset(
        {
            "index",
            "index0",
            "revindex",
            "revindex0",
            "first",
            "last",
            "length",
            "previtem",
            "nextitem",
        }
    ),  # runtime.cpp:606-614
    operators=frozenset(),  # lexer.cpp:107-145: '*', '/', '%' only, no '**' or '//'
    not_implemented={
        "unique": "value.cpp:1020 (Array unique builtin not implemented)",
        "join()": "value.cpp:666 (String join builtin not implemented): 'sep'.join(list)",
        "escape": "runtime.cpp:329 aliases e to escape, which no type defines",
        "e": "runtime.cpp:329 aliases e to escape, which no type defines",
        "truncate": "value.cpp:1400: only undefined values have truncate",
        "wordcount": "value.cpp:1403: only undefined values have wordcount",
        "sum": "value.cpp:1398: only undefined values have sum",
        "escaped": "value.cpp:593-596 (escaped test not implemented)",
        "filter": "value.cpp:597-600 (filter test not implemented)",
    },
)

# -- google/minja ------------------------------------------------------------------------------

_M_METHODS = "minja.hpp:1481-1611 (MethodCallExpr)"

MINJA = Engine(
    name="minja",
    title="google/minja",
    source="google/minja include/minja/minja.hpp @ 021c2293c187 (2025-09-22)",
    methods={
        # arrays, minja.hpp:1496-1509
        "append": Args(1, 1, NO_KW, "minja.hpp:1498"),
        "pop": Args(0, 1, NO_KW, "minja.hpp:1502 (arrays), 1520 (objects: exactly 1)"),
        "insert": Args(2, 2, NO_KW, "minja.hpp:1505"),
        # objects, minja.hpp:1511-1543
        "items": Args(0, 0, NO_KW, "minja.hpp:1513"),
        "keys": Args(0, 0, NO_KW, "minja.hpp:1523"),
        "get": Args(1, 2, NO_KW, "minja.hpp:1530"),
        # strings, minja.hpp:1544-1609
        "strip": Args(0, 1, NO_KW, "minja.hpp:1547"),
        "lstrip": Args(0, 1, NO_KW, "minja.hpp:1551"),
        "rstrip": Args(0, 1, NO_KW, "minja.hpp:1555"),
        "split": Args(1, 1, NO_KW, "minja.hpp:1559 (expectArgs {1, 1})"),
        "capitalize": Args(0, 0, NO_KW, "minja.hpp:1568"),
        "upper": Args(0, 0, NO_KW, "minja.hpp:1571"),
        "lower": Args(0, 0, NO_KW, "minja.hpp:1576"),
        "endswith": Args(1, 1, NO_KW, "minja.hpp:1581"),
        "startswith": Args(1, 1, NO_KW, "minja.hpp:1585"),
        "title": Args(0, 0, NO_KW, "minja.hpp:1589"),
        "replace": Args(2, 3, NO_KW, "minja.hpp:1597"),
    },
    filters={
        # Context::builtins, minja.hpp:2722-3070; simple_function parameters after the input
        "raise_exception": Args(0, 0, cite="minja.hpp:2725"),
        "tojson": Args(0, 1, _kw("indent"), "minja.hpp:2728 (params: value, indent)"),
        "items": Args(0, 0, NO_KW, "minja.hpp:2731"),
        "last": Args(0, 0, NO_KW, "minja.hpp:2744"),
        "trim": Args(0, 0, NO_KW, "minja.hpp:2750"),
        "lower": Args(0, 0, NO_KW, "minja.hpp:2764"),
        "upper": Args(0, 0, NO_KW, "minja.hpp:2765"),
        "default": Args(1, 2, _kw("boolean"), "minja.hpp:2766-2780 (expectArgs {2, 3})"),
        "e": Args(0, 0, NO_KW, "minja.hpp:2784"),
        "escape": Args(0, 0, NO_KW, "minja.hpp:2785"),
        "count": Args(0, 0, NO_KW, "minja.hpp:2798"),
        "dictsort": Args(0, 0, NO_KW, "minja.hpp:2801 (params: value)"),
        "join": Args(0, 1, _kw("d"), "minja.hpp:2812 (params: items, d)"),
        "equalto": Args(1, 1, cite="minja.hpp:2847"),
        "length": Args(0, 0, NO_KW, "minja.hpp:2849"),
        "safe": Args(0, 0, NO_KW, "minja.hpp:2853"),
        "string": Args(0, 0, NO_KW, "minja.hpp:2856"),
        "int": Args(0, 0, NO_KW, "minja.hpp:2859"),
        "list": Args(0, 0, NO_KW, "minja.hpp:2862"),
        "unique": Args(0, 0, NO_KW, "minja.hpp:2870"),
        "select": Args(1, ANY, cite="minja.hpp:2880-2929"),
        "reject": Args(1, ANY, cite="minja.hpp:2880-2929"),
        "map": Args(0, ANY, _kw("attribute", "default"), "minja.hpp:2931-2959"),
        "indent": Args(
            0, 2, _kw("indent", "first"), "minja.hpp:2960 (params: text, indent, first)"
        ),
        "selectattr": Args(1, ANY, NO_KW, "minja.hpp:2975-3016"),
        "rejectattr": Args(1, ANY, NO_KW, "minja.hpp:2975-3017"),
    },
    tests=frozenset(
        {
            "none",
            "boolean",
            "integer",
            "float",
            "number",
            "string",
            "mapping",
            "iterable",
            "sequence",
            "defined",
            "true",
            "false",
        }
    ),  # minja.hpp:1338-1352 ("Unknown type for 'is' operator" otherwise)
    tests_take_args=False,  # minja.hpp:1966-1975: 'is' [not] <identifier>, nothing after
    select_tests=frozenset({"equalto", "==", "in"}),  # looked up as globals, minja.hpp:2993
    globals=frozenset({"range", "namespace", "joiner"}),  # minja.hpp:2722-3070
    statements=frozenset(
        {
            "For",
            "If",
            "Macro",
            "CallBlock",
            "FilterBlock",
            "Assign",
            "AssignBlock",
            "Break",
            "Continue",
        }
    ),  # minja.hpp:2375 (block keywords), 2520 ("Unexpected block")
    recursive_loops=True,  # minja.hpp:964-1040
    loop_attrs=frozenset(
        {
            "index",
            "index0",
            "revindex",
            "revindex0",
            "first",
            "last",
            "length",
            "cycle",
            "previtem",
            "nextitem",
        }
    ),  # minja.hpp:997-1022
    operators=frozenset({"**", "//"}),  # minja.hpp:1373-1374, 2091, 2121
    not_implemented={},
)

ENGINES: dict[str, Engine] = {"jinja": JINJA, "minja": MINJA}
