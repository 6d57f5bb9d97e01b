"""The extensions.conf subset that trunk dialplans use: loading, matching, variables, execution.

Loading (:func:`load_extensions_conf`): contexts, ``exten => pattern,priority[(label)],App(args)``,
``same => ...``, priorities ``1``/``n``/``n(label)``/``hint``, ``include => ctx``, ``[general]``
and ``[globals]``.  Errors raise :class:`ConfigError` with ``file:line``.

Matching (:meth:`Dialplan.find`), as Asterisk's default matcher:

* ``_`` starts a pattern: ``X`` = 0-9, ``Z`` = 1-9, ``N`` = 2-9, ``[15-7]`` = a set, ``.`` = one
  or more of anything, ``!`` = zero or more; ``-`` is ignored; anything else is literal.
* An exact extension beats every pattern.  Patterns are tried most specific first: compare them
  position by position; at each position the one whose position matches fewer characters wins
  (a literal matches 1, N 8, Z 9, X 10, ``.``/``!`` any number), ties broken by the lowest
  character matched, and a pattern that ends first wins.  So for ``301``: ``_3XX`` before
  ``_3.`` before ``_X.``; for ``300``: the exact ``300`` first.
* Each lookup is for an (extension, priority): the first matching extension that has that
  priority wins (Asterisk's behaviour, so a pattern can supply priorities an exact extension
  lacks).  Included contexts are searched after the context's own extensions, in order,
  depth-first, each context at most once.

Variables (:func:`substitute`): ``${VAR}``, ``${VAR:offset}``, ``${VAR:offset:length}`` (negative
values as Asterisk), ``${CALLERID(num|name|all)}``, ``${LEN(x)}``, ``${GLOBAL(x)}``, and ``$[...]``
expressions; unknown variables are empty.  Execution lives in :func:`run`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from iaxgw.gateway.conf.asterisk_conf import ConfigError, Item, read_conf
from iaxgw.gateway.conf.model import Source

__all__ = [
    "ConfigError",
    "Context",
    "Dialplan",
    "Extension",
    "Step",
    "evaluate",
    "load_extensions_conf",
    "match_pattern",
    "pattern_key",
    "split_args",
    "substitute",
    "substring",
]

log = logging.getLogger("iaxgw.dialplan")

_GENERAL_OPTIONS = frozenset({"static", "writeprotect", "autofallthrough", "clearglobalvars",
                              "extenpatternmatchnew", "userscontext", "priorityjumping"})


@dataclass(frozen=True, slots=True)
class Step:
    """One priority of an extension."""

    priority: int
    app: str
    data: str
    label: str | None
    source: Source


@dataclass(slots=True)
class Extension:
    """An extension (or pattern) in one context."""

    name: str                      # as matched: "300" or "_3XX" (dashes removed)
    context: str
    source: Source
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    hint: str | None = None
    _regex: re.Pattern[str] | None = None

    @property
    def is_pattern(self) -> bool:
        return self.name.startswith("_")

    def matches(self, exten: str) -> bool:
        if not self.is_pattern:
            return self.name == exten.replace("-", "")
        if self._regex is None:
            self._regex = _compile(self.name, None)
        return self._regex.fullmatch(exten) is not None


@dataclass(slots=True)
class Context:
    name: str
    source: Source
    extensions: dict[str, Extension] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)
    _patterns: list[Extension] | None = None

    def ordered(self) -> list[Extension]:
        """Exact extensions (definition order), then patterns, most specific first."""
        if self._patterns is None:
            pats = [e for e in self.extensions.values() if e.is_pattern]
            self._patterns = sorted(pats, key=lambda e: pattern_key(e.name))
        return [*(e for e in self.extensions.values() if not e.is_pattern), *self._patterns]


@dataclass(slots=True)
class Dialplan:
    contexts: dict[str, Context] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)
    general: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def candidates(self, context: str, exten: str) -> Iterator[Extension]:
        """Matching extensions in the order Asterisk tries them (includes after own, no loops)."""
        seen: set[str] = set()

        def walk(name: str, depth: int) -> Iterator[Extension]:
            ctx = self.contexts.get(name)
            if ctx is None or name in seen or depth > 128:
                return
            seen.add(name)
            for ext in ctx.ordered():
                if ext.matches(exten):
                    yield ext
            for inc in ctx.includes:
                yield from walk(inc, depth + 1)

        yield from walk(context, 0)

    def find(self, context: str, exten: str, priority: int = 1) -> Extension | None:
        """The extension that runs ``exten``'s ``priority`` in ``context``, or None."""
        for ext in self.candidates(context, exten):
            if priority in ext.steps:
                return ext
        return None

    def step(self, context: str, exten: str, priority: int) -> Step | None:
        ext = self.find(context, exten, priority)
        return ext.steps[priority] if ext is not None else None

    def find_label(self, context: str, exten: str, label: str) -> int | None:
        """The priority carrying ``label`` for ``exten`` in ``context``, or None."""
        for ext in self.candidates(context, exten):
            if label in ext.labels:
                return ext.labels[label]
        return None


# --- patterns -------------------------------------------------------------------------------

_ANY_ONE = 1000
_ANY_ZERO = 1001


def _set_chars(body: str, name: str, source: Source | None) -> str:
    chars: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if ord(lo) > ord(hi):
                raise ConfigError(f"pattern {name!r}: bad range {lo}-{hi}", source)
            chars.extend(chr(c) for c in range(ord(lo), ord(hi) + 1))
            i += 3
        else:
            chars.append(body[i])
            i += 1
    if not chars:
        raise ConfigError(f"pattern {name!r}: empty []", source)
    return "".join(sorted(set(chars)))


def _positions(name: str, source: Source | None) -> list[tuple[int, str, str, str]]:
    """(count of chars matched, lowest char, highest char, regex) per position of pattern
    ``name`` (with _); the lowest and highest of ``.`` and ``!`` are empty."""
    out: list[tuple[int, str, str, str]] = []
    p = name[1:]
    i = 0
    while i < len(p):
        c = p[i]
        u = c.upper()
        if u == "X":
            out.append((10, "0", "9", "[0-9]"))
        elif u == "Z":
            out.append((9, "1", "9", "[1-9]"))
        elif u == "N":
            out.append((8, "2", "9", "[2-9]"))
        elif c == "[":
            end = p.find("]", i)
            if end < 0:
                raise ConfigError(f"pattern {name!r}: missing ']'", source)
            chars = _set_chars(p[i + 1:end], name, source)
            out.append((len(chars), chars[0], chars[-1],
                        "[" + "".join(re.escape(x) for x in chars) + "]"))
            i = end
        elif c == ".":
            out.append((_ANY_ONE, "", "", ".+"))
            break                  # Asterisk ignores anything after . and !
        elif c == "!":
            out.append((_ANY_ZERO, "", "", ".*"))
            break
        elif c == "-":
            pass
        else:
            out.append((1, c, c, re.escape(c)))
        i += 1
    return out


def _compile(name: str, source: Source | None) -> re.Pattern[str]:
    return re.compile("".join(r for _, _, _, r in _positions(name, source)), re.DOTALL)


def pattern_key(name: str) -> tuple[tuple[int, str], ...]:
    """Sort key: smaller = more specific (see module docstring)."""
    return tuple((n, lo) for n, lo, _, _ in _positions(name, None))


def pattern_samples(name: str) -> list[str]:
    """Numbers that ``name`` matches: the lowest and the highest choice at every position (a
    ``.`` or ``!`` stands for one digit, 0 or 9); an exact name is its own one sample."""
    if not name.startswith("_"):
        return [name]
    positions = _positions(name, None)
    lowest = "".join(lo or "0" for _, lo, _, _ in positions)
    highest = "".join(hi or "9" for _, _, hi, _ in positions)
    return [lowest] if highest == lowest else [lowest, highest]


def match_pattern(pattern: str, exten: str) -> bool:
    """Does ``exten`` match ``pattern`` (``_``-pattern or exact name)?"""
    e = Extension(name=_normalise(pattern), context="", source=Source("", 0))
    return e.matches(exten)


def _normalise(name: str) -> str:
    """Drop dashes and spaces outside brackets (Asterisk ignores them in extension names)."""
    out, depth = [], 0
    for c in name:
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        elif c in "- " and depth == 0:
            continue
        out.append(c)
    return "".join(out)


# --- loading --------------------------------------------------------------------------------

_PRI_RE = re.compile(r"^(\d+|n|hint)(?:\(([^()]*)\))?$", re.IGNORECASE)


def _split_app(text: str, source: Source) -> tuple[str, str]:
    text = text.strip()
    paren = text.find("(")
    comma = text.find(",")
    if paren >= 0 and (comma < 0 or paren < comma):
        if not text.endswith(")"):
            raise ConfigError(f"missing ')' in {text!r}", source)
        app, data = text[:paren].strip(), text[paren + 1:-1]
    elif comma >= 0:
        app, data = text[:comma].strip(), text[comma + 1:]
    else:
        app, data = text, ""
    if not app or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", app):
        raise ConfigError(f"invalid application name {app!r}", source)
    return app, data


class _ContextLoader:
    def __init__(self, plan: Dialplan, ctx: Context) -> None:
        self.plan = plan
        self.ctx = ctx
        self.last_exten: str | None = None
        self.last_pri = 0

    def add(self, it: Item, same: bool) -> None:
        src = it.source
        if same:
            if self.last_exten is None:
                raise ConfigError("'same =>' without a preceding 'exten =>'", src)
            ext_name, rest = self.last_exten, it.value
        else:
            ext_name, comma, rest = it.value.partition(",")
            ext_name = ext_name.strip()
            if not comma or not ext_name:
                raise ConfigError(f"expected 'exten => extension,priority,App(args)', got "
                                  f"{it.value!r}", src)
            if "/" in ext_name:
                raise ConfigError(f"caller-ID matching ({ext_name!r}) is not supported", src)
            ext_name = _normalise(ext_name)
            if ext_name.startswith("_"):
                if len(ext_name) < 2:
                    raise ConfigError("empty pattern '_'", src)
                _compile(ext_name, src)
        pri_text, comma, app_text = rest.partition(",")
        pri_text = pri_text.strip()
        m = _PRI_RE.match(pri_text)
        if not m:
            raise ConfigError(f"invalid priority {pri_text!r} (expected a number, n, n(label) "
                              "or hint)", src)
        ext = self.ctx.extensions.get(ext_name)
        if ext is None:
            ext = Extension(name=ext_name, context=self.ctx.name, source=src)
            self.ctx.extensions[ext_name] = ext
            self.ctx._patterns = None
        self.last_exten = ext_name
        kind, label = m.group(1).lower(), m.group(2)
        if kind == "hint":
            ext.hint = app_text.strip()
            return
        if not comma or not app_text.strip():
            raise ConfigError(f"missing application after priority {pri_text!r}", src)
        if kind == "n":
            pri = self.last_pri + 1
        else:
            pri = int(kind)
            if pri < 1:
                raise ConfigError(f"priority must be 1 or more, got {pri}", src)
        if pri in ext.steps:
            raise ConfigError(f"extension {ext_name} priority {pri} already defined at "
                              f"{ext.steps[pri].source}", src)
        app, data = _split_app(app_text, src)
        ext.steps[pri] = Step(priority=pri, app=app, data=data, label=label or None, source=src)
        if label:
            if label in ext.labels:
                self.plan.warnings.append(f"{src}: label '{label}' repeated in {ext_name}")
            else:
                ext.labels[label] = pri
        self.last_pri = pri


def load_extensions_conf(path: str | os.PathLike[str],
                         applications: Collection[str] | None = None) -> Dialplan:
    """Parse an extensions.conf (with includes) into a :class:`Dialplan`; with
    ``applications`` (the names the interpreter runs, ``dialplan_apps.APPLICATIONS``), a step naming
    any other application is a warning."""
    conf = read_conf(path)
    plan = Dialplan()
    include_refs: list[tuple[str, Source]] = []
    for sec in conf.concrete():
        lname = sec.name.lower()
        if lname == "general":
            for it in sec.all_items():
                if it.name not in _GENERAL_OPTIONS:
                    plan.warnings.append(f"{it.source}: unknown option '{it.key}' in [general]")
                plan.general[it.name] = it.value
            continue
        if lname == "globals":
            for it in sec.all_items():
                plan.globals[it.key] = it.value
            continue
        ctx = plan.contexts.get(sec.name)
        if ctx is None:
            ctx = plan.contexts[sec.name] = Context(name=sec.name, source=sec.source)
        loader = _ContextLoader(plan, ctx)
        for it in sec.all_items():
            n = it.name
            if n in ("exten", "same"):
                loader.add(it, same=n == "same")
            elif n == "include":
                inc = it.value.split(",", 1)[0].strip()
                if "," in it.value:
                    plan.warnings.append(f"{it.source}: time-restricted include not supported; "
                                         f"'{inc}' is always included")
                if not inc:
                    raise ConfigError("include => needs a context name", it.source)
                ctx.includes.append(inc)
                include_refs.append((inc, it.source))
            elif n in ("ignorepat", "switch", "eswitch", "lswitch"):
                plan.warnings.append(f"{it.source}: '{it.key}' is not supported; ignored")
            else:
                plan.warnings.append(f"{it.source}: unknown option '{it.key}' in [{sec.name}]")
    for inc, src in include_refs:
        if inc not in plan.contexts:
            plan.warnings.append(f"{src}: include => {inc}: no such context")
    for ctx in plan.contexts.values():
        for ext in ctx.extensions.values():
            for st in ext.steps.values():
                if applications is not None and st.app.lower() not in applications:
                    plan.warnings.append(f"{st.source}: application '{st.app}' is not "
                                         "available in iaxgw")
    for w in plan.warnings:
        log.warning("%s", w)
    return plan


# --- argument splitting and variables -------------------------------------------------------

def split_args(data: str, sep: str = ",") -> list[str]:
    """Split application arguments like Asterisk's standard app args.

    Separators inside ``()``, ``[]`` or double quotes do not split; quotes are removed and
    ``\\x`` gives ``x``.  ``""`` gives ``[""]``.
    """
    args: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(data):
        c = data[i]
        if c == "\\" and i + 1 < len(data):
            cur.append(data[i + 1])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif quoted:
            cur.append(c)
        elif c in "([":
            depth += 1
            cur.append(c)
        elif c in ")]":
            depth = max(depth - 1, 0)
            cur.append(c)
        elif c == sep and depth == 0:
            args.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    args.append("".join(cur))
    return args


def substring(value: str, offset: int, length: int | None = None) -> str:
    """Asterisk's ``${VAR:offset:length}``: negative offset counts from the end, negative length
    drops characters from the end."""
    n = len(value)
    if offset < 0:
        offset = max(n + offset, 0)
    if offset >= n:
        return ""
    rest = value[offset:]
    if length is None:
        return rest
    if length >= 0:
        return rest[:length]
    return rest[:length] if len(rest) > -length else ""


def _matching(text: str, start: int, open_c: str, close_c: str) -> int:
    """Index of the ``close_c`` closing the bracket opened just before ``start``, or -1."""
    depth = 1
    i = start
    while i < len(text):
        if text[i] == open_c:
            depth += 1
        elif text[i] == close_c:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


Resolver = Callable[[str], "str | None"]
FunctionCall = Callable[[str, str], "str | None"]


def substitute(text: str, resolve: Resolver, function: FunctionCall | None = None) -> str:
    """Expand ``${...}`` and ``$[...]`` in ``text``.

    ``resolve(name)`` returns a variable's value or None (-> empty); ``function(name, arg)``
    handles ``${NAME(arg)}`` (None -> empty).
    """
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            end = _matching(text, i + 2, "{", "}")
            if end < 0:
                log.warning("missing '}' in %r", text)
                out.append(text[i:])
                break
            inner = substitute(text[i + 2:end], resolve, function)
            out.append(_variable(inner, resolve, function))
            i = end + 1
        elif text.startswith("$[", i):
            end = _matching(text, i + 2, "[", "]")
            if end < 0:
                log.warning("missing ']' in %r", text)
                out.append(text[i:])
                break
            out.append(evaluate(substitute(text[i + 2:end], resolve, function)))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _variable(expr: str, resolve: Resolver, function: FunctionCall | None) -> str:
    name, offs = expr, ""
    paren = expr.find("(")
    if paren > 0 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", expr[:paren]):
        end = _matching(expr, paren + 1, "(", ")")
        if end > 0:
            fname, arg, offs = expr[:paren], expr[paren + 1:end], expr[end + 1:]
            value = (function(fname.upper(), arg) if function else None) or ""
            return _apply_offsets(value, offs)
    if ":" in expr:
        name, _, offs = expr.partition(":")
        offs = ":" + offs
    return _apply_offsets(resolve(name) or "", offs)


def _apply_offsets(value: str, offs: str) -> str:
    if not offs.startswith(":"):
        return value
    parts = offs[1:].split(":")
    try:
        off = int(parts[0] or "0")
        length = int(parts[1]) if len(parts) > 1 and parts[1] != "" else None
    except ValueError:
        log.warning("bad substring offsets %r", offs)
        return value
    return substring(value, off, length)


# --- $[ ] expressions -----------------------------------------------------------------------

_TOKEN_RE = re.compile(r'\s*("(?:[^"\\]|\\.)*"|!=|<=|>=|=~|[|&=<>+\-*/%()!?:]'
                       r'|[^\s|&=<>+\-*/%()!?:"]+)')


def _num(s: str) -> int | float | None:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return None


def _fmt(v: int | float | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class _Expr:
    def __init__(self, text: str) -> None:
        self.toks: list[str] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if not m or not m.group(1):
                raise ValueError(f"cannot parse near {text[pos:]!r}")
            self.toks.append(m.group(1))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        t = self.toks[self.i]
        self.i += 1
        return t

    def parse(self) -> str:
        if not self.toks:
            return ""
        v = self.ternary()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return v

    def ternary(self) -> str:
        cond = self.or_()
        if self.peek() == "?":
            self.take()
            a = self.ternary()
            if self.peek() != ":":
                raise ValueError("'?' without ':'")
            self.take()
            b = self.ternary()
            return a if _truth(cond) else b
        return cond

    def or_(self) -> str:
        v = self.and_()
        while self.peek() == "|":
            self.take()
            r = self.and_()
            v = v if _truth(v) else (r if _truth(r) else "0")
        return v

    def and_(self) -> str:
        v = self.cmp()
        while self.peek() == "&":
            self.take()
            r = self.cmp()
            v = v if _truth(v) and _truth(r) else "0"
        return v

    def cmp(self) -> str:
        v = self.add()
        while self.peek() in ("=", "!=", "<", ">", "<=", ">=", "=~"):
            op = self.take()
            r = self.add()
            if op == "=~":
                m = re.match(r, v)
                v = (m.group(1) if m and m.groups() else str(m.end()) if m else "0")
                continue
            a, b = _num(v), _num(r)
            x: Any = (a, b) if a is not None and b is not None else (v, r)
            res = {"=": x[0] == x[1], "!=": x[0] != x[1], "<": x[0] < x[1], ">": x[0] > x[1],
                   "<=": x[0] <= x[1], ">=": x[0] >= x[1]}[op]
            v = _fmt(res)
        return v

    def add(self) -> str:
        v = self.mul()
        while self.peek() in ("+", "-"):
            op = self.take()
            r = self.mul()
            a, b = _num(v), _num(r)
            if a is None or b is None:
                raise ValueError(f"non-numeric operand for {op}")
            v = _fmt(a + b if op == "+" else a - b)
        return v

    def mul(self) -> str:
        v = self.unary()
        while self.peek() in ("*", "/", "%"):
            op = self.take()
            r = self.unary()
            a, b = _num(v), _num(r)
            if a is None or b is None or (op != "*" and b == 0):
                raise ValueError(f"bad operands for {op}")
            if op == "*":
                v = _fmt(a * b)
            elif op == "/":
                v = _fmt(int(a / b) if isinstance(a, int) and isinstance(b, int) else a / b)
            else:
                v = _fmt(a % b)
        return v

    def unary(self) -> str:
        t = self.peek()
        if t == "!":
            self.take()
            return "0" if _truth(self.unary()) else "1"
        if t == "-":
            self.take()
            a = _num(self.unary())
            if a is None:
                raise ValueError("non-numeric operand for unary -")
            return _fmt(-a)
        return self.primary()

    def primary(self) -> str:
        t = self.peek()
        if t is None:
            raise ValueError("unexpected end of expression")
        self.take()
        if t == "(":
            v = self.ternary()
            if self.peek() != ")":
                raise ValueError("missing ')'")
            self.take()
            return v
        if t.startswith('"'):
            return re.sub(r"\\(.)", r"\1", t[1:-1])
        return t


def _truth(v: str) -> bool:
    n = _num(v)
    return n != 0 if n is not None else v != ""


def evaluate(expr: str) -> str:
    """Evaluate an Asterisk ``$[...]`` expression (already substituted); errors give ``""``.

    Supports ``| & = != < > <= >= =~ + - * / % ! ( ) ?:`` and double-quoted strings; comparisons
    are numeric when both sides are numbers, else string comparisons; true is ``1``.
    """
    try:
        return _Expr(expr).parse()
    except (ValueError, IndexError, re.error) as exc:
        log.warning("expression %r: %s", expr, exc)
        return ""
