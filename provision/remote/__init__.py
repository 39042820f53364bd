"""Code that runs on the managed host (sent over SSH, never imported locally).

A host program longer than a few lines lives here as a real Python file (linted, and
runnable in tests on a scratch tree), and whoever sends it reads it with ``source``: the
fact collector (``provision.facts``), the users role's batch account writer.
"""

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of the host program ``name`` (e.g. ``"collect.py"``), read once."""
    return resources.files(__name__).joinpath(name).read_text()
