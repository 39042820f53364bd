"""Ansible INI inventories, read into the same shape as a YAML one (``all:`` mapping).

Supported, as Ansible reads them: ``[group]`` host lines with ``key=value`` variables,
``[group:vars]``, ``[group:children]``, host ranges (``lab[1:4]``, ``lab[01:10]``,
``node[a:c]``, with an optional ``:step``), comments (``#`` and ``;``), quoted values and
Ansible's typing (host-line values and ``:vars`` values are read as YAML scalars, so
``8000`` is a number and ``true``/``True``/``yes`` a boolean). A problem names the file and
line.
"""

from __future__ import annotations

import re
import string
from typing import Any

import yaml

from .variables import bounded_repr

RANGE_RE = re.compile(r"\[([^\]:]+):([^\]:]+)(?::(\d+))?\]")
SECTION_RE = re.compile(r"^\[([^\]]+)\]\s*$")


def expand_range(pattern: str) -> list[str]:
    """``lab[1:3]`` -> lab1, lab2, lab3; ``lab[01:02]`` keeps the padding; ``n[a:c]``.

    Raises ValueError on a malformed range.
    """
    m = RANGE_RE.search(pattern)
    if not m:
        return [pattern]
    start, end, step = m.group(1), m.group(2), int(m.group(3) or 1)
    head, tail = pattern[: m.start()], pattern[m.end():]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if int(end) < int(start) or step < 1:
            raise ValueError(f"range [{start}:{end}] is empty")
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start in string.ascii_letters \
            and end in string.ascii_letters:
        if ord(end) < ord(start) or step < 1:
            raise ValueError(f"range [{start}:{end}] is empty")
        items = [chr(i) for i in range(ord(start), ord(end) + 1, step)]
    else:
        raise ValueError(f"range [{start}:{end}] must be numbers or single letters")
    return [name for item in items for name in expand_range(head + item + tail)]


def is_range(name: str) -> bool:
    return bool(RANGE_RE.search(name))


# A host's inventory name reaches ssh_config (verify), the report, and Apache's ServerName
# by default: a DNS name, an IPv4 address or a bare IPv6 address, never anything a config
# line or a command line could read as more than one word.
HOST_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})|[0-9A-Fa-f:]+:[0-9A-Fa-f:.]*")


def valid_host_name(name: str) -> bool:
    return bool(HOST_NAME_RE.fullmatch(name)) and not name.endswith(("-", "."))


def typed(value: str) -> Any:
    """A value as Ansible types it: YAML scalar rules (quotes make a string)."""
    try:
        out = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return value
    if isinstance(out, (str, int, float, bool)) or out is None:
        return out
    return out if isinstance(out, (list, dict)) else value


def _strip_comment(line: str) -> str:
    """Drop a trailing ``#``/``;`` comment that is outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "#;" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _words(text: str) -> list[str]:
    """Split on blanks outside quotes, keeping the quotes (so that ``port="8000"`` stays
    the string '8000', as in Ansible, and ``a="x y"`` is one word)."""
    words, word, quote = [], "", None
    for ch in text:
        if quote:
            word += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            word += ch
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
    if quote:
        raise ValueError(f"no closing quotation mark ({quote})")
    return [*words, word] if word else words


def _pairs(text: str, where: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        words = _words(text)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return out
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            problems.append(f"{where}: expected key=value, found {word!r}")
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            out[key] = value[1:-1]
        else:
            out[key] = typed(value)
    return out


def parse_ini(text: str, name: str) -> tuple[dict[str, Any], list[str], dict[str, int]]:
    """(YAML-shaped ``{'all': ...}`` data, problems, line of each host/var key)."""
    problems: list[str] = []
    groups: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    child_of: dict[str, set[str]] = {}

    def group(g: str) -> dict[str, Any]:
        return groups.setdefault(g, {"hosts": {}, "vars": {}})

    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        line = _strip_comment(raw).strip()
        if not line:
            continue
        m = SECTION_RE.match(line)
        if m:
            section, _, kind = m.group(1).partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children") or not section:
                problems.append(f"{where}: unknown section [{m.group(1)}] "
                                "(use [group], [group:vars] or [group:children])")
                kind = "skip"
                continue
            group(section)
            lines.setdefault(f"group {section}", number)
            continue
        if kind == "skip":
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                problems.append(f"{where}: expected key=value in [{section}:vars]")
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                group(section)["vars"][key.strip()] = value[1:-1]
            else:
                group(section)["vars"][key.strip()] = typed(value)
            lines[f"{section}.vars.{key.strip()}"] = number
        elif kind == "children":
            child = line.split()[0]
            if child in ("all", section):
                problems.append(f"{where}: group {section!r} cannot contain {child!r}")
                continue
            group(child)
            child_of.setdefault(section, set()).add(child)
        else:
            host, _, rest = line.partition(" ")
            try:
                names = expand_range(host)
            except ValueError as exc:
                problems.append(f"{where}: {bounded_repr(host, 40)}: {exc}")
                continue
            if not all(valid_host_name(n) for n in names):
                # Not echoed: a file that is not an inventory at all (a shadow-like file)
                # would otherwise be printed line by line.
                problems.append(f"{where}: not a valid host name (letters, digits, '.', '-' "
                                "and '_', starting with a letter or digit; or an IP address)")
                continue
            hvars = _pairs(rest, where, problems)
            for h in names:
                group(section)["hosts"].setdefault(h, {}).update(hvars)
                lines.setdefault(f"host {h}", number)
                for k in hvars:
                    lines[f"{h}.{k}"] = number
    return _assemble(groups, child_of), problems, lines


def _assemble(groups: dict[str, dict[str, Any]], child_of: dict[str, set[str]]) -> dict:
    """Nest the flat INI groups under ``all`` the way Ansible's YAML form writes them."""
    has_parent = {c for cs in child_of.values() for c in cs}

    def body(g: str, seen: frozenset[str]) -> dict[str, Any]:
        src = groups.get(g, {"hosts": {}, "vars": {}})
        out: dict[str, Any] = {}
        if src["hosts"]:
            out["hosts"] = {h: (v or None) for h, v in src["hosts"].items()}
        if src["vars"]:
            out["vars"] = dict(src["vars"])
        kids = sorted(child_of.get(g, set()) - seen)
        if kids:
            out["children"] = {k: body(k, seen | {g}) for k in kids}
        return out

    top = body("all", frozenset())
    top.setdefault("children", {})
    for g in sorted(groups):
        if g != "all" and g not in has_parent:
            top["children"][g] = body(g, frozenset({"all"}))
    if not top["children"]:
        del top["children"]
    return {"all": top}
