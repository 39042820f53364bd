"""Writing the workstation's own files (reports, users.yml) safely.

A file is written to a temporary file created exclusively (``O_EXCL``, an unpredictable
name, mode 0600 from the start) beside the target, then renamed over it: a symlink or a
world-readable file planted at a predictable temp name is never followed or reused, and
a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def write_private(path: str | Path, data: str | bytes, *, what: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; ``what`` names it in an error."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"{what}: cannot write {path}: {exc.strerror}") from None


MAX_INPUT = 4 * 1024 * 1024  # an inventory, vars file, password file or certificate
MAX_ALIASES = 200  # YAML aliases in one file (a "billion laughs" document has millions)
MAX_DEPTH = 64  # nesting of lists and mappings


def read_text(path: str | Path, *, what: str, limit: int = MAX_INPUT) -> str:
    """A regular file's text, UTF-8, at most ``limit`` bytes; ConfigError otherwise (the
    message never quotes the file's content)."""
    import stat

    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what}: {path} is not a regular file")
        if st.st_size > limit:
            raise ConfigError(f"{what}: {path} is {st.st_size} bytes, more than {limit}")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{what}: {path} is more than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {path} is not UTF-8 text (byte {exc.start})") from None


def load_yaml(text: str, *, where: str,
              key_lines: dict[int, dict[object, int]] | None = None) -> object:
    """YAML, safely: no duplicate keys, a bounded number of aliases, bounded nesting.
    Problems are ConfigErrors naming ``where`` and the line, never quoting values.

    ``key_lines``, when given, receives the line of each key of each mapping, by the
    mapping's ``id`` (valid while the returned document lives): a message about a key
    can then name its line.
    """
    import yaml

    from .variables import describe_key

    # libyaml's parser when PyYAML has it (it does from PyPI's wheels): the same safe
    # constructor, a scanner in C (an inventory is parsed in a tenth of the time).
    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(f"{where}: line {key_node.start_mark.line + 1}: a key "
                                  "must be a plain value") from None
            if key in seen:
                raise ConfigError(f"{where}: line {key_node.start_mark.line + 1}: "
                                  f"{describe_key(key)} is given twice (first on line "
                                  f"{seen[key]})")
            seen[key] = key_node.start_mark.line + 1
        data = loader.construct_mapping(node)
        if key_lines is not None:
            key_lines[id(data)] = seen
        return data

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        aliases = depth = 0
        for event in yaml.parse(text, Loader=Loader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"{where}: line {event.start_mark.line + 1}: nested "
                                      f"too deeply (more than {MAX_DEPTH} levels)")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        if aliases > MAX_ALIASES:
            raise ConfigError(f"{where}: {aliases} YAML aliases (at most {MAX_ALIASES}): "
                              "refusing a document that expands to more than it says")
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        if "nesting depth" in problem:  # libyaml's own bound, met before ours in a flow
            raise ConfigError(f"{where}:{at} nested too deeply (more than {MAX_DEPTH} "
                              "levels)") from None
        raise ConfigError(f"{where}:{at} malformed YAML: {problem}") from None
