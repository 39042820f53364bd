"""Ansible-style YAML inventory: hosts, groups, group_vars/, host_vars/ and host patterns.

An inventory is a file or a directory. A directory is read the way Ansible reads one: every
``*.yml``/``*.yaml`` file (YAML) and every ``*.ini`` or extensionless file such as ``hosts``
(INI, see ``provision.inventory_ini``) at its top is an inventory source (so a
git-ignored ``lab.yml`` written by ``invoke lab.up`` joins the hand-written ``hosts.yml``),
and ``group_vars/`` and
``host_vars/`` beside them hold variables by group and by host.

Variable precedence, lowest first (written down once, here and in docs/inventory.md):

1. role defaults (``VARIABLES`` in each ``roles/<name>.py``);
2. group variables: ``all``, then parent groups before child groups; within one level,
   inventory-file ``vars:`` before ``group_vars/<group>``;
3. host variables: inventory-file host entries, then ``host_vars/<host>``;
4. the command line (``--var name=value``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .errors import ConfigError
from .files import load_yaml, read_text
from .inventory_ini import expand_range, parse_ini, valid_host_name
from .variables import variable_name_problem

INVENTORY_SUFFIXES = (".yml", ".yaml")
GROUP_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_NAME_PROBLEMS = 5  # bad variable names reported one by one in one mapping


def host_name_problem(name: str) -> str | None:
    if valid_host_name(name):
        return None
    from .variables import bounded_repr

    return (f"{bounded_repr(name)} is not a valid host name (letters, digits, '.', '-' and "
            "'_', starting with a letter or digit; or an IP address)")


INI_SUFFIXES = (".ini", "")


def _is_source(path: Path) -> bool:
    if not path.is_file() or path.name.startswith(".") or path.name.endswith("~"):
        return False
    return path.suffix in INVENTORY_SUFFIXES or path.suffix in INI_SUFFIXES


@dataclass
class Origin:
    """Where a variable's winning value came from (file and key), for error messages."""

    file: str
    key: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}"


@dataclass
class Group:
    name: str
    hosts: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)
    vars: dict[str, Any] = field(default_factory=dict)
    var_origins: dict[str, Origin] = field(default_factory=dict)
    file_vars: dict[str, Any] = field(default_factory=dict)
    file_var_origins: dict[str, Origin] = field(default_factory=dict)


@dataclass
class Host:
    """A host as the inventory describes it, with its fully merged variables."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    def origin(self, key: str) -> str:
        top = key.split("[", 1)[0].split(".", 1)[0]
        if top in self.origins:
            return f"{self.origins[top].file}: {key}"
        return f"(default): {key}"


class Inventory:
    """The parsed inventory: groups, hosts and a resolver for host variables."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.groups: dict[str, Group] = {"all": Group("all")}
        self.host_entries: dict[str, dict[str, Any]] = {}
        self.host_entry_origins: dict[str, dict[str, Origin]] = {}
        self.host_file_vars: dict[str, dict[str, Any]] = {}
        self.host_file_origins: dict[str, dict[str, Origin]] = {}
        self.problems: list[str] = []
        self.ini_lines: dict[Path, dict[str, int]] = {}  # INI file -> line of each key
        self.key_lines: dict[int, dict[object, int]] = {}  # YAML mapping id -> key lines
        self._named_bad: set[tuple[str, object]] = set()  # bad variable names reported
        self.declared: set[str] = {"all"}  # groups named in an inventory file
        self._load()
        self.key_lines.clear()  # ids of mappings that are gone may be reused
        if self.problems:
            raise ConfigError(self.problems)

    # ----------------------------------------------------------------- loading
    def _load(self) -> None:
        if not self.path.exists():
            raise ConfigError(f"inventory not found: {self.path}")
        if self.path.is_dir():
            sources = sorted(p for p in self.path.iterdir() if _is_source(p))
            vars_root = self.path
        else:
            sources = [self.path]
            vars_root = self.path.parent
        if not sources:
            raise ConfigError(f"{self.path}: no inventory file (*.yml, *.ini or hosts) found")
        for source in sources:
            data = self._read_source(source)
            if data is None:
                continue
            if not isinstance(data, dict) or set(data) - {"all"}:
                extra = sorted(set(data) - {"all"}) if isinstance(data, dict) else []
                self.problems.append(
                    f"{self._rel(source)}: the top level must be a single 'all:' mapping"
                    + (f" (found {', '.join(map(str, extra))})" if extra else "")
                )
                continue
            self._parse_group("all", data["all"] or {}, source, "all", parent=None)
        for kind in ("group_vars", "host_vars"):
            folder = vars_root / kind
            if folder.is_dir():
                self._load_vars_dir(folder, kind)
        for name in self.host_file_vars:
            if name not in self.host_entries:
                self.problems.append(
                    f"{self._rel(vars_root / 'host_vars' / name)}: no host named {name!r} "
                    f"in the inventory"
                )
        for name, group in self.groups.items():
            if name != "all" and name not in self.declared and group.file_vars:
                self.problems.append(
                    f"{self._rel(vars_root / 'group_vars' / name)}: no group named "
                    f"{name!r} in the inventory"
                )

    def _where(self, source: Path, ini_key: str) -> str:
        """The file, with the line for an INI file (YAML keys name the place already)."""
        line = self.ini_lines.get(source, {}).get(ini_key)
        return f"{self._rel(source)}:{line}" if line else self._rel(source)

    def _rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)

    def _read_source(self, path: Path) -> Any:
        """An inventory file: YAML by its suffix, else Ansible INI."""
        if path.suffix in INVENTORY_SUFFIXES:
            return self._read_yaml(path)
        try:
            text = read_text(path, what=self._rel(path))
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None
        data, problems, lines = parse_ini(text, self._rel(path))
        self.problems.extend(problems)
        self.ini_lines[path] = lines
        return data

    def _read_yaml(self, path: Path) -> Any:
        try:
            return load_yaml(read_text(path, what=self._rel(path)), where=self._rel(path),
                             key_lines=self.key_lines)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
        return None

    def _parse_group(
        self, name: str, body: Any, source: Path, key: str, parent: str | None
    ) -> None:
        where = f"{self._rel(source)}: {key}"
        self.declared.add(name)
        group = self.groups.setdefault(name, Group(name))
        if parent:
            group.parents.add(parent)
            self.groups[parent].children.add(name)
        if not isinstance(body, dict):
            self.problems.append(f"{where}: a group must be a mapping (hosts/children/vars)")
            return
        unknown = set(body) - {"hosts", "children", "vars"}
        if unknown:
            self.problems.append(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                "(a group has only hosts:, children: and vars:)"
            )
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            self.problems.append(f"{where}.hosts: must be a mapping of host names")
            hosts = {}
        expanded: list[tuple[str, Any]] = []
        for host, hvars in hosts.items():
            try:
                expanded += [(h, hvars) for h in expand_range(str(host))]
            except ValueError as exc:
                self.problems.append(f"{where}.hosts.{host}: {exc}")
        for host, hvars in expanded:
            problem = host_name_problem(host)
            if problem:
                self.problems.append(f"{where}.hosts: {problem}")
                continue
            hvars = hvars or {}
            if not isinstance(hvars, dict):
                self.problems.append(f"{where}.hosts.{host}: host variables must be a mapping")
                continue
            group.hosts.add(host)
            entry = self.host_entries.setdefault(host, {})
            origins = self.host_entry_origins.setdefault(host, {})
            bad = self._bad_names(hvars, source, f"{key}.hosts.{host}", f"{host}.")
            for k, v in hvars.items():
                if k in bad:
                    continue
                entry[str(k)] = v
                origins[str(k)] = Origin(self._where(source, f"{host}.{k}"),
                                         f"{key}.hosts.{host}.{k}")
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            self.problems.append(f"{where}.vars: must be a mapping")
            gvars = {}
        bad = self._bad_names(gvars, source, f"{key}.vars", f"{name}.vars.")
        for k, v in gvars.items():
            if k in bad:
                continue
            group.vars[str(k)] = v
            group.var_origins[str(k)] = Origin(self._where(source, f"{name}.vars.{k}"),
                                               f"{key}.vars.{k}")
        children = body.get("children") or {}
        if not isinstance(children, dict):
            self.problems.append(f"{where}.children: must be a mapping of group names")
            children = {}
        for child, cbody in children.items():
            child = str(child)
            if not GROUP_NAME_RE.fullmatch(child):
                from .variables import bounded_repr

                self.problems.append(f"{where}.children: {bounded_repr(child)} is not a valid "
                                     "group name (letters, digits, '_' and '-', starting with "
                                     "a letter or '_')")
                continue
            if child == "all" or child == name:
                self.problems.append(f"{where}.children.{child}: a group cannot contain itself")
                continue
            self._parse_group(child, cbody or {}, source, f"{key}.children.{child}", name)

    def _load_vars_dir(self, folder: Path, kind: str) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                name = entry.name
                files = sorted(p for p in entry.rglob("*") if p.suffix in INVENTORY_SUFFIXES)
            elif entry.suffix in INVENTORY_SUFFIXES:
                name = entry.stem
                files = [entry]
            else:
                continue
            for file in files:
                data = self._read_yaml(file)
                if data is None:
                    continue
                if not isinstance(data, dict):
                    self.problems.append(f"{self._rel(file)}: must be a mapping of variables")
                    continue
                if kind == "group_vars":
                    group = self.groups.setdefault(name, Group(name))
                    target, origins = group.file_vars, group.file_var_origins
                else:
                    target = self.host_file_vars.setdefault(name, {})
                    origins = self.host_file_origins.setdefault(name, {})
                bad = self._bad_names(data, file, "", "")
                for k, v in data.items():
                    if k in bad:
                        continue
                    target[str(k)] = v
                    origins[str(k)] = Origin(self._rel(file), str(k))

    def _bad_names(self, mapping: dict, source: Path, keypath: str, ini_prefix: str) -> set:
        """Keys of a mapping of variables that are not variable names (Ansible refuses
        them too), each reported with its file, line and ``keypath``, never echoed in
        full: a file that is no vars file at all (a shadow file read as YAML) is refused,
        not ignored. ``ini_prefix`` finds an INI key's line (``host.`` or ``group.vars.``).
        """
        bad = [k for k in mapping if variable_name_problem(k)]
        if not bad:
            return set()
        rel = self._rel(source)
        ini = self.ini_lines.get(source) if source.suffix not in INVENTORY_SUFFIXES else None
        yaml_lines = self.key_lines.get(id(mapping), {})
        inside = f": {keypath}" if keypath else ""
        for k in bad[:MAX_NAME_PROBLEMS]:
            if ini is not None:
                line = ini.get(f"{ini_prefix}{k}")
                at = f"{rel}:{line}" if line else rel
            else:
                line = yaml_lines.get(k)
                at = f"{rel}: line {line}" if line else rel
            if (at, k) in self._named_bad:
                continue  # a range of hosts shares its line and its variables
            self._named_bad.add((at, k))
            self.problems.append(f"{at}{inside}: {variable_name_problem(k)}")
        if len(bad) > MAX_NAME_PROBLEMS:
            self.problems.append(f"{rel}{inside}: {len(bad) - MAX_NAME_PROBLEMS} more keys "
                                 "that are not valid variable names (is it a vars file?)")
        return set(bad)

    # --------------------------------------------------------------- resolving
    @property
    def hosts(self) -> list[str]:
        return sorted(self.host_entries, key=_natural)

    def groups_of(self, host: str) -> list[str]:
        """Groups of a host, ordered from the least to the most specific."""
        direct = {g.name for g in self.groups.values() if host in g.hosts}
        found: set[str] = {"all"}
        stack = list(direct)
        while stack:
            g = stack.pop()
            if g in found:
                continue
            found.add(g)
            stack.extend(self.groups[g].parents)
        return sorted(found, key=lambda g: (self._depth(g), g))

    def _depth(self, group: str, seen: frozenset[str] = frozenset()) -> int:
        if group == "all" or group in seen:
            return 0
        parents = self.groups[group].parents or {"all"}
        return 1 + max(self._depth(p, seen | {group}) for p in parents)

    def hosts_of_group(self, group: str) -> set[str]:
        out: set[str] = set()
        stack, seen = [group], set()
        while stack:
            g = stack.pop()
            if g in seen:
                continue
            seen.add(g)
            if g == "all":
                return set(self.host_entries)
            out |= self.groups[g].hosts
            stack.extend(self.groups[g].children)
        return out

    def resolve(
        self, name: str, defaults: dict[str, Any], cli_vars: dict[str, Any] | None = None
    ) -> Host:
        """Merge a host's variables by the precedence written in this module's docstring."""
        merged: dict[str, Any] = dict(defaults)
        origins: dict[str, Origin] = {}
        groups = self.groups_of(name)
        for g in groups:
            grp = self.groups[g]
            for layer, lorigins in ((grp.vars, grp.var_origins), (grp.file_vars,
                                                                   grp.file_var_origins)):
                merged.update(layer)
                origins.update(lorigins)
        merged.update(self.host_entries.get(name, {}))
        origins.update(self.host_entry_origins.get(name, {}))
        merged.update(self.host_file_vars.get(name, {}))
        origins.update(self.host_file_origins.get(name, {}))
        for k, v in (cli_vars or {}).items():
            merged[k] = v
            origins[k] = Origin("command line", f"--var {k}")
        merged["inventory_hostname"] = name
        return Host(name=name, vars=merged, origins=origins, groups=groups)

    def select(self, pattern: str) -> list[str]:
        """Hosts matching ``pattern``: names, groups, ``all``, globs, ``!excluded``, commas.

        A term that matches nothing is an error that lists what exists.
        """
        terms = [t.strip() for t in (pattern or "").split(",") if t.strip()]
        if not terms:
            raise ConfigError("--hosts is empty: name hosts, groups or 'all'")
        chosen: set[str] = set()
        excluded: set[str] = set()
        unknown: list[str] = []
        for term in terms:
            neg = term.startswith("!")
            word = term[1:] if neg else term
            found = self._match(word)
            if not found:
                unknown.append(word)
            (excluded if neg else chosen).update(found)
        if unknown:
            raise ConfigError(
                f"--hosts: no host or group named {', '.join(map(repr, unknown))} in "
                f"{self.path}. Hosts: {', '.join(self.hosts) or '(none)'}; groups: "
                f"{', '.join(sorted(self.groups))}"
            )
        result = sorted(chosen - excluded, key=_natural)
        if not result:
            raise ConfigError(f"--hosts {pattern!r} selects no host")
        return result

    def _match(self, word: str) -> set[str]:
        if word in self.groups:
            return self.hosts_of_group(word)
        if word in self.host_entries:
            return {word}
        if any(c in word for c in "*?["):
            hits = {h for h in self.host_entries if fnmatch.fnmatchcase(h, word)}
            for g in self.groups:
                if fnmatch.fnmatchcase(g, word):
                    hits |= self.hosts_of_group(g)
            return hits
        return set()


def _natural(name: str) -> tuple:
    """Sort lab2 before lab10."""
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
