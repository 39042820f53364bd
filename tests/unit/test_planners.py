"""Planners from case files: ``cases/<planner>/*.yml`` = facts + desired -> expected ops.

A case holds:

- ``facts``: compact host state, answered through the real collector (``hostmodel``):
  ``passwd``/``group``/``shadow`` lines (added to this Debian 12 machine's captured files,
  replacing same-name lines), ``files`` ({path: {type, mode, owner, group, content}}),
  ``secret`` and ``unfetched`` (paths requested as secret / without content), ``dpkg``
  ({name: version or a whole stanza}), ``venvs`` ({path: [dist-info names]}), ``units``
  ({unit: {property: value}});
- ``args`` / ``kwargs`` for the planner (``plan_user``'s first arg is a ``UserSpec`` dict);
- ``expect``: ``ops`` (argv lists; ``{argv, stdin}`` for a command with input;
  ``{upload, mode, owner, group, validate}`` for an upload; ``{refuse: text}`` for a
  refusal whose message contains text; ``$SECRET_SCRIPT`` (``$NOFOLLOW_CHOWN``) stands for the
  secret-generating script), ``diff`` (substrings that must appear), ``diff_excludes``
  and ``hidden`` (strings that must appear in no diff and no shown command), ``notify``;
- ``xfail``: set when the case documents a known bug (the test then flips when fixed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hostmodel import HostState, set_line
from provision import steps
from provision.facts import FactRequest
from provision.steps import Action, Command, Refuse, Upload, UserSpec

CASES = Path(__file__).resolve().parent / "cases"
PLANNERS = ("plan_group", "plan_user", "plan_directory", "plan_file", "plan_secret",
            "plan_apt", "plan_pip", "plan_npm", "plan_unit", "plan_service", "plan_absent")


def load_cases(planner: str) -> list:
    params = []
    for path in sorted((CASES / planner).glob("*.yml")):
        case = yaml.safe_load(path.read_text())
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if "xfail" in case \
            else []
        params.append(pytest.param(case, id=path.stem, marks=marks))
    return params


def host_from(compact: dict[str, Any]) -> tuple[HostState, FactRequest]:
    host = HostState()
    for key in ("passwd", "group", "shadow"):
        for line in (compact.get(key) or "").splitlines():
            setattr(host, key, set_line(getattr(host, key), line.split(":", 1)[0], line))
    for path, f in (compact.get("files") or {}).items():
        f = {"type": "file", "mode": "0644", "owner": "root", "group": "root", **f}
        if f["type"] == "file":
            f["content"] = str(f.get("content", "")).encode()
        host.files[path] = f
    host.dpkg.update(compact.get("dpkg") or {})
    host.venvs.update(compact.get("venvs") or {})
    host.units.update(compact.get("units") or {})
    req = host.everything()
    req.content -= set(compact.get("unfetched") or [])
    req.secret |= set(compact.get("secret") or [])
    return host, req


def shown_op(op: steps.Op) -> Any:
    if isinstance(op, Refuse):
        return {"refuse": op.message}
    if isinstance(op, Upload):
        return {"upload": op.path, "mode": op.mode, "owner": op.owner, "group": op.group,
                "validate": op.validate}
    names = {steps.SECRET_SCRIPT: "$SECRET_SCRIPT", steps.NOFOLLOW_CHOWN: "$NOFOLLOW_CHOWN"}
    argv = [names.get(a, a) for a in op.argv]
    return {"argv": argv, "stdin": op.stdin.decode()} if op.stdin else argv


def expected_op(op: Any) -> Any:
    if isinstance(op, dict) and "upload" in op:
        return {"mode": "0644", "owner": "root", "group": "root", "validate": None, **op}
    return op


def op_matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict) and "refuse" in expected:
        return isinstance(actual, dict) and expected["refuse"] in actual.get("refuse", "")
    return actual == expected


def plan(planner: str, case: dict[str, Any]) -> Action:
    host, req = host_from(case.get("facts") or {})
    args = list(case.get("args") or [])
    if planner == "plan_user":
        spec = dict(args[0])
        spec["groups"] = tuple(spec.get("groups", ()))
        args[0] = UserSpec(**spec)
        if args[0].password_hash:
            req.password[args[0].name] = args[0].password_hash
    facts = host.facts(req)
    return getattr(steps, planner)(facts, *args, **(case.get("kwargs") or {}))


def check_case(planner: str, case: dict[str, Any]) -> None:
    act = plan(planner, case)
    want = case["expect"]
    got = [shown_op(op) for op in act.ops]
    expected = [expected_op(op) for op in want["ops"]]
    assert len(got) == len(expected) and all(map(op_matches, got, expected)), \
        f"ops:\n{got}\nexpected:\n{expected}\ndiff:\n{act.diff}"
    assert act.changed == bool(want["ops"])
    for text in want.get("diff", []):
        assert text in act.diff, f"{text!r} not in diff:\n{act.diff}"
    if not want["ops"]:
        assert act.diff == ""
    for text in want.get("diff_excludes", []) + want.get("hidden", []):
        assert text not in act.diff
    for text in want.get("hidden", []):
        for op in act.ops:
            assert text not in op.shown()
    if "notify" in want:
        assert list(act.notify) == want["notify"]
    for op in act.ops:
        assert isinstance(op, Command | Upload | Refuse)
        if isinstance(op, Command):
            assert all(isinstance(a, str) for a in op.argv)


def test_every_planner_has_an_already_right_case():
    for planner in PLANNERS:
        cases = [yaml.safe_load(p.read_text()) for p in (CASES / planner).glob("*.yml")]
        assert any(c["expect"]["ops"] == [] and "xfail" not in c for c in cases), planner


@pytest.mark.parametrize("case", load_cases("plan_group"))
def test_plan_group(case):
    check_case("plan_group", case)


@pytest.mark.parametrize("case", load_cases("plan_user"))
def test_plan_user(case):
    check_case("plan_user", case)


@pytest.mark.parametrize("case", load_cases("plan_directory"))
def test_plan_directory(case):
    check_case("plan_directory", case)


@pytest.mark.parametrize("case", load_cases("plan_file"))
def test_plan_file(case):
    check_case("plan_file", case)


@pytest.mark.parametrize("case", load_cases("plan_secret"))
def test_plan_secret(case):
    check_case("plan_secret", case)


@pytest.mark.parametrize("case", load_cases("plan_apt"))
def test_plan_apt(case):
    check_case("plan_apt", case)


@pytest.mark.parametrize("case", load_cases("plan_pip"))
def test_plan_pip(case):
    check_case("plan_pip", case)


@pytest.mark.parametrize("case", load_cases("plan_npm"))
def test_plan_npm(case):
    check_case("plan_npm", case)


@pytest.mark.parametrize("case", load_cases("plan_unit"))
def test_plan_unit(case):
    check_case("plan_unit", case)


@pytest.mark.parametrize("case", load_cases("plan_service"))
def test_plan_service(case):
    check_case("plan_service", case)


@pytest.mark.parametrize("case", load_cases("plan_absent"))
def test_plan_absent(case):
    check_case("plan_absent", case)


def test_file_diff_is_unified_and_masks_secrets():
    diff = steps.file_diff("/etc/x", b"a\nb\n", b"a\nc\n")
    assert diff.splitlines()[:2] == ["--- /etc/x", "+++ /etc/x"]
    assert "-b" in diff.splitlines() and "+c" in diff.splitlines()
    assert steps.file_diff("/etc/x", None, b"new\n").startswith("--- /dev/null")
    assert steps.file_diff("/etc/x", b"a", b"TOKEN=s3cret", secret=True) == \
        f"~ /etc/x: {steps.MASK}"
    assert "binary" in steps.file_diff("/bin/x", b"\xff\xfe", b"\x00\xff")
