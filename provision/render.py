"""Jinja2 rendering of ``templates/<role>/<file>.j2`` with StrictUndefined.

Values from the inventory reach Python files through the ``py`` filter (a Python literal,
never pasted raw) and systemd ExecStart= lines through ``systemd_arg``. A template error
names the template file and line.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from .errors import ConfigError
from .variables import bounded_repr

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def py_literal(value: Any) -> str:
    """A Python literal for ``value`` that evaluates back to exactly ``value``.

    Sets render sorted (stable output, so an unchanged inventory renders byte-identical).
    """
    if isinstance(value, set | frozenset):
        if not value:
            return "set()"
        return "{" + ", ".join(py_literal(v) for v in sorted(value, key=repr)) + "}"
    if isinstance(value, list | tuple):
        inner = ", ".join(py_literal(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no Python literal (use a finite number)")
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise TypeError(f"cannot render {type(value).__name__} as a Python literal")


def systemd_escape_arg(value: str | int) -> str:
    """Quote one unit-file value for systemd (double quotes, specifiers doubled).

    A control character (systemd ends a line at '\\r' too) is refused, never escaped: the
    variable types already refuse them, this is the last line of defence.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in str(value)):
        raise ConfigError(f"refusing a control character in a unit file value: "
                          f"{bounded_repr(str(value))}")
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def systemd_escape_env(value: str) -> str:
    """One quoted ``Environment=`` assignment: like ``systemd_arg``, but ``$`` stays as it
    is (systemd expands specifiers there, not variables)."""
    return systemd_escape_arg(value).replace("$$", "$")


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (~3 ms a template, at every no-op) in the
    user's own cache directory (0700; jinja2 keys each entry by the template's source
    checksum, so an edited template is compiled again). None if it cannot be made."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = os.path.join(base, "jhprovision", "jinja2")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None  # not ours alone: never load compiled code from it
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(path)


@cache
def environment(root: str = str(TEMPLATES)) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders config files, not HTML
    )
    env.filters["py"] = py_literal
    env.filters["systemd_arg"] = systemd_escape_arg
    env.filters["systemd_env"] = systemd_escape_env
    return env


def render(name: str, context: dict[str, Any], root: Path | None = None) -> str:
    """Render ``templates/<name>`` (e.g. ``jupyterhub/jupyterhub_config.py.j2``)."""
    env = environment(str(root or TEMPLATES))
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"templates/{exc.name or name}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"templates/{name}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template not found: templates/{exc.name}") from exc
