"""Property-based checks: inventory strings (quotes, $(), backticks, newlines, ';', unicode,
long input) reach Python files as exact literals and commands as exact argv words."""

from __future__ import annotations

import ast
import shlex
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakeconfig import exec_config
from hostmodel import fresh, inventory_vars
from provision.facts import FactRequest
from provision.render import py_literal
from provision.steps import Upload, UserSpec, plan_directory, plan_file, plan_user
from faketransport import FakeTransport
from roles import jupyterhub

FEW = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])

NASTY_PARTS = st.sampled_from([
    "'", '"', "'''", '"""', "\\", "\\'", "$(rm -rf /)", "`id`", "${HOME}", "\n", "\r\n",
    ";", "&&", "|", "#", "{{ x }}", "{% if %}", "%s", "\x00", "\t", " ", "--", "-rf",
    "é", "日本語", "🦄", "\u2028", "\u202e", "c.JupyterHub.ip = '0.0.0.0'",
])
NASTY = st.one_of(
    st.lists(st.one_of(NASTY_PARTS, st.text(max_size=8)), max_size=8).map("".join),
    st.text(min_size=300, max_size=2000),
)
NAMES = st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True)
BASE_V = inventory_vars(jupyterhub_request_otp=True)
FRESH_FACTS = fresh().facts(FactRequest())


# ------------------------------------------------------------------------ py_literal
HASHABLE = st.one_of(st.none(), st.booleans(), st.integers(), NASTY)
VALUES = st.recursive(
    st.one_of(HASHABLE, st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(HASHABLE, max_size=4).map(set),
        st.dictionaries(HASHABLE, inner, max_size=4),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@FEW
@given(VALUES)
def test_py_literal_round_trips(value):
    text = py_literal(value)
    assert same(ast.literal_eval(text), value)
    assert "\n" not in text  # one line: it cannot end a statement early


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")],
                         ids=["inf", "-inf", "nan"])
def test_py_literal_non_finite_float_is_literal_or_refused(value):
    try:
        text = py_literal(value)
    except (TypeError, ValueError):
        return  # refusing is fine too
    back = ast.literal_eval(text)
    assert back == value or (back != back and value != value)


# ------------------------------------------------------------- the rendered hub config
@FEW
@given(prompt=NASTY, notebook_dir=NASTY.filter(bool), default_url=NASTY,
       admins=st.sets(NAMES, max_size=4), allowed=st.sets(NAMES, max_size=4),
       groups=st.sets(NAMES, max_size=4))
def test_rendered_config_holds_exactly_the_given_values(prompt, notebook_dir, default_url,
                                                        admins, allowed, groups):
    v = dict(BASE_V, jupyterhub_otp_prompt=prompt, jupyterhub_notebook_dir=notebook_dir,
             jupyterhub_default_url=default_url, jupyterhub_admin_users=sorted(admins),
             jupyterhub_allowed_users=sorted(allowed),
             jupyterhub_allowed_groups=sorted(groups))
    got = exec_config(jupyterhub.render_config(v))
    assert got["Authenticator"] == {"allow_all": False, "allowed_users": allowed,
                                    "admin_users": admins, "request_otp": True,
                                    "otp_prompt": prompt}
    assert got["Spawner"]["notebook_dir"] == notebook_dir
    assert got["Spawner"]["default_url"] == default_url
    assert got["PAMAuthenticator"] == {"allowed_groups": {"jupyterhub-users", *groups},
                                       "admin_groups": {"wheel"}, "service": "jupyterhub"}
    assert set(got) == {"JupyterHub", "ConfigurableHTTPProxy", "Spawner", "SystemdSpawner",
                        "Authenticator",
                        "PAMAuthenticator"}
    assert got["JupyterHub"]["bind_url"] == "http://:8000/"


# ----------------------------------------------------------------------- argv words
def through_the_wire(argv: list[str]) -> list[str]:
    """What the host's shell hands the program: the transport's command line, split."""
    t = FakeTransport("h")
    t.run(argv)
    assert shlex.split(shlex.join(argv)) == argv
    return t.calls[-1][0]


@FEW
@given(comment=NASTY, shell=NASTY)
def test_plan_user_argv_is_not_reinterpreted(comment, shell):
    act = plan_user(FRESH_FACTS, UserSpec("alice", uid=2001, shell="/" + shell,
                                          comment=comment))
    useradd = act.ops[0].argv
    assert through_the_wire(useradd) == useradd
    if comment:
        assert useradd[useradd.index("--comment") + 1] == comment
    assert useradd[-2:] == ["--", "alice"]


@FEW
@given(path=NASTY, content=NASTY)
def test_plan_file_upload_path_is_one_word(path, content):
    act = plan_file(FRESH_FACTS, "/" + path, content, mode="0600")
    (upload,) = act.ops
    assert isinstance(upload, Upload)
    t = FakeTransport("h")
    t.put(upload.content, upload.path, mode=upload.mode, owner=upload.owner,
          group=upload.group, validate=upload.validate)
    argv, stdin = t.calls[-1]
    assert argv[4:8] == ["/" + path, "0600", "root", "root"]
    assert stdin == (content.encode())


@FEW
@given(path=NASTY)
def test_plan_directory_argv_is_not_reinterpreted(path):
    act = plan_directory(FRESH_FACTS, "/" + path, mode="0750", owner="alice", group="alice")
    (op,) = act.ops
    assert through_the_wire(op.argv) == op.argv
    assert op.argv[-2:] == ["--", "/" + path]


def test_nofollow_chown_never_follows_a_link_planted_on_the_way(tmp_path):
    """Runs the real script here (the tests run as root, like the tool on a host)."""
    import grp
    import os
    import pwd
    import subprocess
    import sys

    from provision.steps import NOFOLLOW_CHOWN

    assert os.geteuid() == 0, "this test runs the chown for real: run the suite as root"
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    target = tmp_path / "etc-like" / "notebooks"
    target.mkdir(parents=True)
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    (home / "work").symlink_to(tmp_path / "etc-like")  # planted by the user

    def chown(path):
        return subprocess.run([sys.executable, "-I", "-c", NOFOLLOW_CHOWN, str(path),
                               "nobody", "nogroup"], capture_output=True, text=True)

    proc = chown(home / "work" / "notebooks")
    assert proc.returncode != 0 and "work is a symlink or not a directory" in proc.stderr
    assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)  # not redirected
    (home / "real").mkdir()
    (home / "real" / "last-link").symlink_to(target)  # a link as the last component
    assert chown(home / "real" / "last-link").returncode == 0
    assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)  # the link, not its target
    assert os.lstat(home / "real" / "last-link").st_uid == nobody
    assert chown(home / "real").returncode == 0
    assert ((home / "real").stat().st_uid, (home / "real").stat().st_gid) == (nobody, nogroup)
    assert chown(tmp_path / ".." / tmp_path.name).returncode != 0  # '..' refused
