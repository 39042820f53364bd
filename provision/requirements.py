"""Requirement strings ('name', 'name[extra]' or 'name==version') and version equality,
as the planners (``provision.steps``) and the pin sets (``provision.pins``) both read
them.

Example: ``req_name_version("Jupyter_Server[x]==2.1")`` is ``("jupyter-server", "2.1")``.
"""

from __future__ import annotations

from .facts import normalize_dist


def req_name_version(req: str) -> tuple[str, str | None]:
    name, _, version = req.partition("==")
    return normalize_dist(name.split("[", 1)[0]), version or None


def same_version(a: str, b: str) -> bool:
    """PEP 440 equality ('1.0' == '1.0.0'); plain string equality if either is invalid."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
