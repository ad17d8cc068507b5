"""Line numbers for TOML key paths, so that errors read ``file:line: key.path: message``.

``tomllib`` gives values without positions. This scanner walks the text once and records the
line on which every key path starts, array elements included (``("rules", 2, "type")``). It
understands what recipes use: tables, arrays of tables, dotted and quoted keys, inline tables,
multi-line arrays and all four string forms. It never decides validity: tomllib does that first.
"""

from __future__ import annotations

from collections.abc import Sequence

Path = tuple[str | int, ...]

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.aot_count: dict[Path, int] = {}

    # -- low level -------------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i < len(self.s):
                if self.s[self.i] == "\n":
                    self.line += 1
                self.i += 1

    def skip_ws(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.advance()
            else:
                break

    def string(self) -> str:
        q = self.peek()
        if self.s.startswith(q * 3, self.i):
            self.advance(3)
            end = self.s.find(q * 3, self.i)
            end = len(self.s) if end < 0 else end
            # a closing delimiter may be followed by up to two more quotes of the content
            while self.s.startswith(q, end + 3):
                end += 1
            val = self.s[self.i : end]
            self.advance(end + 3 - self.i)
            return val
        self.advance()
        out = []
        while self.i < len(self.s) and self.peek() != q and self.peek() != "\n":
            if q == '"' and self.peek() == "\\":
                out.append(self.s[self.i : self.i + 2])
                self.advance(2)
                continue
            out.append(self.peek())
            self.advance()
        self.advance()
        return "".join(out)

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws(newlines=False)
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                j = self.i
                while self.peek() in _BARE and self.peek():
                    self.advance()
                parts.append(self.s[j : self.i])
            self.skip_ws(newlines=False)
            if self.peek() == ".":
                self.advance()
                continue
            return parts

    # -- values ----------------------------------------------------------------------------
    def value(self, path: Path) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.advance()
            idx = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() in ("]", ""):
                    self.advance()
                    return
                self.lines.setdefault((*path, idx), self.line)
                self.value((*path, idx))
                idx += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.advance()
        elif c == "{":
            self.advance()
            while True:
                self.skip_ws(newlines=False)
                if self.peek() in ("}", "", "\n"):
                    self.advance()
                    return
                line = self.line
                k = self.key()
                self.lines.setdefault((*path, *k), line)
                self.advance()  # '='
                self.skip_ws(newlines=False)
                self.value((*path, *k))
                self.skip_ws(newlines=False)
                if self.peek() == ",":
                    self.advance()
        else:  # number, bool, date: up to a delimiter
            while self.peek() not in ("", ",", "]", "}", "\n", "#"):
                self.advance()

    # -- document --------------------------------------------------------------------------
    def document(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self.skip_ws(newlines=True)
            if not self.peek():
                return self.lines
            line = self.line
            if self.peek() == "[":
                aot = self.peek(1) == "["
                self.advance(2 if aot else 1)
                name = tuple(self.key())
                self.advance(2 if aot else 1)
                if aot:
                    n = self.aot_count.get(name, 0)
                    self.aot_count[name] = n + 1
                    table = (*name, n)
                else:
                    table = name
                self.lines.setdefault(name, line)
                self.lines.setdefault(table, line)
            else:
                k = self.key()
                self.lines.setdefault((*table, *k), line)
                self.advance()  # '='
                self.skip_ws(newlines=False)
                self.value((*table, *k))


def key_lines(text: str) -> dict[Path, int]:
    """Map every key path of a (valid) TOML document to the line where it starts."""
    try:
        return _Scanner(text).document()
    except (IndexError, ValueError):  # positions are a convenience; never fail a load on them
        return {}


def line_of(lines: dict[Path, int], path: Sequence[str | int]) -> int | None:
    """The line of ``path``, or of its longest prefix that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return None
