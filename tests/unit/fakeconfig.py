"""A stand-in for traitlets' ``get_config()`` that records what a jupyterhub_config.py sets."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any


class RecordingConfig:
    """Stands in for traitlets' ``get_config()``: records ``c.Section.trait = value``."""

    def __init__(self) -> None:
        self.sections: defaultdict[str, SimpleNamespace] = defaultdict(SimpleNamespace)

    def __getattr__(self, name: str) -> SimpleNamespace:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.sections[name]


def exec_config(text: str) -> dict[str, dict[str, Any]]:
    """Run a rendered jupyterhub_config.py; return what it set, by section."""
    cfg = RecordingConfig()
    code = compile(text, "jupyterhub_config.py", "exec")
    exec(code, {"get_config": lambda: cfg})  # noqa: S102 - our own rendered config
    return {name: vars(ns) for name, ns in cfg.sections.items()}
