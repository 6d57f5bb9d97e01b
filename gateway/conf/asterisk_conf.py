"""A reader for Asterisk-format ``.conf`` files (iax.conf, extensions.conf, phones.conf).

What it understands, following Asterisk's ``main/config.c``:

* ``[name]`` sections; ``[name](!)`` templates; ``[name](tmpl1,tmpl2)`` inheritance (the templates
  must be defined earlier, their items come first, in the order listed); ``[name](!,tmpl)``;
  ``[name](+)`` appends to an earlier section of that name.
* ``name = value`` and ``name => value`` (``Item.arrow`` keeps which).  Only the first ``=``
  splits, so ``exten => 1,1,Set(A=b)`` keeps its value whole.  Names and values are stripped.
* ``;`` comments, ``\\;`` for a literal semicolon (the backslash is removed, as Asterisk does), and
  ``;-- ... --;`` block comments, which may span lines and nest.
* ``#include file`` / ``#include "file"`` (relative to the including file; glob patterns allowed)
  and ``#tryinclude`` (a missing file is not an error).  Included lines continue the current
  section.  ``#exec`` is refused: iaxgw never runs shell commands from a config file.

Every item carries its :class:`~iaxgw.gateway.conf.model.Source`.  Repeated keys are kept in order.
Any problem raises :class:`ConfigError` whose message starts with ``file:line:``; messages do not
quote the line (it may hold a secret, or be the first line of a file included by mistake).

Only regular files of at most :data:`MAX_FILE_BYTES` are read.  Bytes that are not UTF-8 are
kept (``surrogateescape``): a secret is hashed with the bytes the file holds, as Asterisk does.
An unterminated ``;--`` block comment is an error (it would drop the rest of the file, an ACL
with it, silently: Asterisk only warns).
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from iaxgw.gateway.conf.model import Source

__all__ = ["ConfFile", "ConfigError", "Item", "Section", "read_conf", "strip_comment"]

_MAX_INCLUDE_DEPTH = 32
#: Largest config file read (an ``#include`` of a device or a huge file is refused).
MAX_FILE_BYTES = 4 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration file is invalid.  ``str(exc)`` is ``"file:line: reason"``."""

    def __init__(self, reason: str, source: Source | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source is not None else reason)


@dataclass(frozen=True, slots=True)
class Item:
    """One ``key = value`` (or ``key => value``) line."""

    key: str
    value: str
    source: Source
    arrow: bool = False          # written as ``=>``

    @property
    def name(self) -> str:
        """The key, lower-cased (Asterisk compares option names case-insensitively)."""
        return self.key.lower()


@dataclass(slots=True)
class Section:
    """A ``[name]`` section: its own ``items`` plus the ``inherited`` template items."""

    name: str
    source: Source
    template: bool = False
    bases: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    inherited: list[Item] = field(default_factory=list)   # the templates' items, expanded

    def all_items(self) -> list[Item]:
        """Inherited template items first, then the section's own, as Asterisk applies them."""
        return [*self.inherited, *self.items]

    def get(self, key: str) -> Item | None:
        """The last item called ``key`` (case-insensitive), or None."""
        found = None
        for it in self.all_items():
            if it.name == key.lower():
                found = it
        return found


@dataclass(slots=True)
class ConfFile:
    """A parsed file: sections in file order (templates included, flagged)."""

    path: str
    sections: list[Section] = field(default_factory=list)
    files: list[str] = field(default_factory=list)       # every file read, includes too

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def concrete(self) -> list[Section]:
        """Sections that are not templates."""
        return [s for s in self.sections if not s.template]


def strip_comment(line: str, depth: int = 0) -> tuple[str, int]:
    """Remove comments from one line; return the text left and the block-comment depth after it.

    ``depth`` is the ``;-- --;`` nesting level carried over from earlier lines.
    """
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if depth > 0:
            if line.startswith("--;", i):
                depth -= 1
                i += 3
            elif line.startswith(";--", i):
                depth += 1
                i += 3
            else:
                i += 1
            continue
        ch = line[i]
        if ch == "\\" and i + 1 < n and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            if line.startswith(";--", i):
                depth += 1
                i += 3
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out), depth


class _Reader:
    def __init__(self, top: str) -> None:
        self.conf = ConfFile(path=top)
        self.current: Section | None = None
        self.by_name: dict[str, Section] = {}

    def read(self, path: str, stack: list[str], where: Source | None, optional: bool) -> None:
        real = os.path.realpath(path)
        if real in stack:
            chain = " -> ".join([*(os.path.basename(p) for p in stack), os.path.basename(real)])
            raise ConfigError(f"#include cycle: {chain}", where)
        if len(stack) >= _MAX_INCLUDE_DEPTH:
            raise ConfigError("#include nested too deeply", where)
        try:
            data = _read_regular(path)
        except FileNotFoundError:
            if optional:
                return
            raise ConfigError(f"cannot open {path!r}: no such file", where) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path!r}: {exc.strerror or exc}", where) from None
        lines = data.decode("utf-8", "surrogateescape").splitlines()
        self.conf.files.append(path)
        stack = [*stack, real]
        depth = 0
        opened = 0
        for lineno, raw in enumerate(lines, 1):
            src = Source(path, lineno)
            was = depth
            text, depth = strip_comment(raw, depth)
            if depth and not was:
                opened = lineno
            text = text.strip()
            if not text:
                continue
            if text.startswith("#"):
                self._directive(text, src, path, stack)
            elif text.startswith("["):
                self._section_header(text, src)
            else:
                self._item(text, src)
        if depth:
            raise ConfigError("';--' block comment never closed with '--;' (the rest of the "
                              "file would be ignored)", Source(path, opened))

    def _directive(self, text: str, src: Source, path: str, stack: list[str]) -> None:
        word, _, arg = text[1:].partition(" ")
        word = word.strip().lower()
        arg = arg.strip()
        if word == "exec":
            raise ConfigError("#exec is not supported (iaxgw does not run commands from configs)",
                              src)
        if word not in ("include", "tryinclude"):
            raise ConfigError(f"unknown directive '#{word[:20]}'", src)
        if len(arg) >= 2 and (arg[0] == arg[-1] == '"' or (arg[0], arg[-1]) == ("<", ">")):
            arg = arg[1:-1]
        if not arg:
            raise ConfigError(f"#{word} needs a file name", src)
        target = arg if os.path.isabs(arg) else os.path.join(os.path.dirname(path), arg)
        optional = word == "tryinclude"
        if any(c in arg for c in "*?["):
            matches = sorted(glob.glob(target))
            if not matches and not optional:
                raise ConfigError(f"#include {arg!r}: no file matches", src)
            for m in matches:
                self.read(m, stack, src, optional)
        else:
            self.read(target, stack, src, optional)

    def _section_header(self, text: str, src: Source) -> None:
        close = text.find("]")
        if close < 0:
            raise ConfigError("missing ']' in section header", src)
        name = text[1:close].strip()
        if not name:
            raise ConfigError("empty section name", src)
        rest = text[close + 1:].strip()
        template = False
        bases: list[str] = []
        append = False
        if rest:
            if not (rest.startswith("(") and rest.endswith(")")):
                raise ConfigError("unexpected text after section header", src)
            for opt in (o.strip() for o in rest[1:-1].split(",")):
                if opt == "!":
                    template = True
                elif opt == "+":
                    append = True
                elif opt:
                    bases.append(opt)
        if append:
            prev = self.by_name.get(name)
            if prev is None:
                raise ConfigError(f"[{name}](+) adds to a section that does not exist", src)
            self.current = prev
            return
        sec = Section(name=name, source=src, template=template, bases=bases)
        for base in bases:
            tmpl = self.by_name.get(base)
            if tmpl is None:
                raise ConfigError(f"[{name}] inherits from '{base}', which is not defined above",
                                  src)
            sec.inherited.extend(tmpl.all_items())
        self.conf.sections.append(sec)
        self.by_name[name] = sec
        self.current = sec

    def _item(self, text: str, src: Source) -> None:
        if self.current is None:
            raise ConfigError("option line outside any [section]", src)
        key, eq, value = text.partition("=")
        if not eq:
            raise ConfigError("expected 'name = value'", src)
        arrow = value.startswith(">")
        if arrow:
            value = value[1:]
        key = key.strip()
        if not key:
            raise ConfigError("missing option name before '='", src)
        self.current.items.append(Item(key=key, value=value.strip(), source=src, arrow=arrow))


def _read_regular(path: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``MAX_FILE_BYTES``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file (a device, FIFO or directory)")
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data


def read_conf(path: str | os.PathLike[str]) -> ConfFile:
    """Read an Asterisk-format config file (and its includes)."""
    p = str(Path(path))
    reader = _Reader(p)
    reader.read(p, [], None, optional=False)
    return reader.conf
