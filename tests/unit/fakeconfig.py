"""A stand-in for traitlets' ``get_config()`` that records what a jupyterhub_config.py sets."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any


class LazyValue:
    """What traitlets gives for a trait not set yet: ``c.JupyterHub.services.append(x)``,
    ``c.Spawner.environment.update(...)`` and ``c.X.y.add(...)`` work on it, as on a real
    config (traitlets' LazyConfigValue), and are recorded as a list, dict or set."""

    def __init__(self) -> None:
        self.value: Any = None

    def _as(self, kind: type) -> Any:
        if self.value is None:
            self.value = kind()
        if not isinstance(self.value, kind):
            raise TypeError(f"{type(self.value).__name__} used as {kind.__name__}")
        return self.value

    def append(self, item: Any) -> None:
        self._as(list).append(item)

    def extend(self, items: Any) -> None:
        self._as(list).extend(items)

    def insert(self, index: int, item: Any) -> None:
        self._as(list).insert(index, item)

    def update(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], set | frozenset):
            self._as(set).update(*args)
        else:
            self._as(dict).update(*args, **kwargs)

    def add(self, item: Any) -> None:
        self._as(set).add(item)


class Section(SimpleNamespace):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        lazy = LazyValue()
        setattr(self, name, lazy)
        return lazy


class RecordingConfig:
    """Stands in for traitlets' ``get_config()``: records ``c.Section.trait = value``."""

    def __init__(self) -> None:
        self.sections: defaultdict[str, Section] = defaultdict(Section)

    def __getattr__(self, name: str) -> SimpleNamespace:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.sections[name]


def exec_config(text: str) -> dict[str, dict[str, Any]]:
    """Run a rendered jupyterhub_config.py; return what it set, by section."""
    cfg = RecordingConfig()
    code = compile(text, "jupyterhub_config.py", "exec")
    exec(code, {"get_config": lambda: cfg})  # noqa: S102 - our own rendered config
    out = {}
    for name, ns in cfg.sections.items():
        # a trait only read (a LazyValue never filled) was not set
        traits = {k: (v.value if isinstance(v, LazyValue) else v) for k, v in vars(ns).items()
                  if not (isinstance(v, LazyValue) and v.value is None)}
        if traits:
            out[name] = traits
    return out
