"""Hostile values, class by class (issue: every value is checked for the syntax of the file
or command it lands in). Each must be refused before any connection, naming its key; and
whatever is accepted must render as exactly one word / one literal where it lands."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostmodel import VARIABLES, inventory_vars
from provision.config import check_value
from roles import jupyterhub, proxy

PATH_VARS = ["jupyterhub_venv", "jupyterhub_state_dir", "jupyterhub_config_dir",
             "proxy_prefix", "nodejs_prefix", "users_default_shell"]
HOSTILE_PATHS = [
    "/var/lib/jh\rExecStartPre=/bin/touch /tmp/pwned",  # \r ends a unit line too
    "/var/lib/jh\nExecStartPre=/bin/true", "/opt/jh\x00x", "/opt/jh\x1b[31m",
    "/usr/bin/touch /tmp/x /opt/jh",  # a space splits ExecStart
    "/opt/jh\t", "/opt/%h/jh", "/opt/$HOME/jh", "/opt/${USER}", "/opt/a:/tmp/evil",
    '/opt/"jh"', "/opt/'jh'", "/opt/jh;id", "/opt/jh#x", "/opt/j\\h", "/opt/*", "/opt/jh?",
    "/opt/~root", "/opt/../etc", "/opt/jh/..", "relative/path", "", "/opt/\u2028jh",
]


@pytest.mark.parametrize("name", PATH_VARS)
@pytest.mark.parametrize("value", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
def test_a_hostile_path_is_refused(name, value):
    assert check_value(VARIABLES[name], value), f"{name}={value!r} was accepted"


SYSTEM_DIRS = ["/", "/etc", "/etc/", "/tmp", "/home", "/usr", "/var", "/root", "/home/alice",
               "/usr/bin", "/var/lib", "/opt", "/boot", "/bin"]


@pytest.mark.parametrize("name", ["jupyterhub_venv", "jupyterhub_state_dir",
                                  "jupyterhub_config_dir", "proxy_prefix", "nodejs_prefix"])
@pytest.mark.parametrize("value", SYSTEM_DIRS)
def test_a_system_directory_is_never_a_directory_the_tool_owns(name, value):
    assert check_value(VARIABLES[name], value), f"{name}={value!r} was accepted"


HOSTILE_IPS = ["fe80::1%x\nUser=root", "fe80::1%eth0 x", "127.0.0.1\n", "127.0.0.1 ", "::1%",
               "10.0.0.1/8", "localhost\nX=1", "1.2.3.4.5", "[::1]"]


@pytest.mark.parametrize("name", ["proxy_api_ip", "jupyterhub_hub_ip", "jupyterhub_ip"])
@pytest.mark.parametrize("value", HOSTILE_IPS, ids=range(len(HOSTILE_IPS)))
def test_a_hostile_address_is_refused(name, value):
    assert check_value(VARIABLES[name], value), f"{name}={value!r} was accepted"


HOSTILE_WORDS = {
    "jupyterhub_base_url": ["/jhub/\n", "/jhub/\nProxyPass / http://evil/", "/j hub/",
                            "/jhub/\"", "jhub/", "/jhub", "/%2e%2e/", "/jhub/#"],
    "proxy_version": ["5.3.0\n", "5.3.0 --global evil", "latest", "5.3.0;id", "../x"],
    "jupyterhub_version": ["6.1.1\n", "6.1.1 evil", ">=6", "6.1.1;x"],
    "wheel_group": ["wheel\n", "wheel x", "wheel:x", "-wheel", "Wheel", "w" * 40],
    "proxy_user": ["chproxy\n", "root\nUser=root", "-x", "ch proxy"],
    "apache_server_name": ["fe80::1%x\n    Include /etc/shadow", "h1\n    Include x",
                           "h 1", "h1;x", "*.example.org", '"h1"', "h1#x", "-h1"],
    "ansible_host": ["fe80::1%x\n  ProxyCommand touch /tmp/pwned", "10.0.0.5 -oX=y",
                     "h1\nHost *", "-oProxyCommand=x"],
    "jupyterhub_hub_connect_ip": ["10.0.0.1\nc.X = 1", "hub host"],
    "jupyterhub_bind_url": ["http://:8000/\nX", "http://:8000/ x", "ftp://:8000/",
                            "http://[fe80::1%x\n]:8000/"],
    # Apache directives (MDCertificateAuthority, MDContactEmail, MDRenewWindow, ServerAlias)
    "apache_acme_ca": ["https://ca/dir\n    MDomain evil", "https://ca/dir x", "http://ca/",
                       "https://ca/${HOME}", "https://ca/\"x", "https://ca/'x", "https://ca/<x>",
                       "https://u:p@ca/", "https://ca/?q=1", "https://ca/#f", "https://c a/",
                       "https://ca:99999/", "ca/dir", "file:///etc/shadow"],
    "apache_acme_email": ["a@b.org\n    MDomain x", "a b@c.org", "a@b.org x", "\"a\"@b.org",
                          "a@b", "@b.org", "a@-b.org", "a@b.org>"],
    "apache_acme_renew_window": ["33%\nMDomain x", "33 %", "100%", "0%", "-1d", "30 d",
                                 "1y", "d", ""],
    "apache_server_aliases": [["h1\n    Include x"], ["h 1"], ["*.example.org"], "h1",
                              [["h1"]], ["h1#x"]],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in HOSTILE_WORDS.items()
                                             for v in vs])
def test_a_hostile_word_is_refused(name, value):
    assert check_value(VARIABLES[name], value), f"{name}={value!r} was accepted"


@pytest.mark.parametrize("user", [
    {"name": "alice\n"}, {"name": "alice bob"}, {"name": "Alice"}, {"name": "-alice"},
    {"name": "root"}, {"name": "daemon"}, {"name": "systemd-x"}, {"name": "a" * 33},
    {"name": "alice", "comment": "x:y"}, {"name": "alice", "comment": "a\nb"},
    {"name": "alice", "shell": "/bin/bash -c id"}, {"name": "alice", "uid": 0},
    {"name": "alice", "uid": "2001"}, {"name": "alice", "uid": True},
    {"name": "alice", "groups": ["root"]}, {"name": "alice", "groups": ["a b"]},
    {"name": "alice", "authorized_keys": ["ssh-ed25519 AAAA\ncommand=x ssh-rsa AAAA"]},
    {"name": "alice", "state": "deleted"}, {"name": "alice", "admin": "yes"},
])
def test_a_hostile_user_is_refused(user):
    with pytest.raises(AssertionError, match="test inventory is invalid"):
        inventory_vars(users=[user])


# ---------------------------------------------------- what is accepted lands as one word
SAFE = st.from_regex(re.compile(r"/[A-Za-z0-9._+@-]{1,20}(/[A-Za-z0-9._+@-]{1,20}){0,3}"),
                     fullmatch=True)


def unit_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


@settings(max_examples=60, deadline=None)
@given(venv=SAFE, state=SAFE)
def test_accepted_paths_never_add_a_unit_line(venv, state):
    v = inventory_vars()
    v.update(jupyterhub_venv="/srv" + venv, jupyterhub_state_dir="/srv" + state)
    if check_value(VARIABLES["jupyterhub_venv"], v["jupyterhub_venv"]) or \
            check_value(VARIABLES["jupyterhub_state_dir"], v["jupyterhub_state_dir"]):
        return  # refused: nothing renders
    base = unit_lines(jupyterhub.render_unit(inventory_vars()))
    lines = unit_lines(jupyterhub.render_unit(v))
    assert len(lines) == len(base)
    assert [ln.split("=", 1)[0] for ln in lines] == [ln.split("=", 1)[0] for ln in base]
    exec_start = next(ln for ln in lines if ln.startswith("ExecStart="))
    assert exec_start.split()[0] == f'ExecStart="{v["jupyterhub_venv"]}/bin/jupyterhub"'


def test_the_proxy_unit_quotes_every_inventory_value():
    v = inventory_vars(proxy_api_ip="::1", jupyterhub_ip="10.0.0.5")
    exec_start = next(ln for ln in proxy_unit_text(v).splitlines()
                      if ln.startswith("ExecStart="))
    for value in ("::1", "10.0.0.5"):
        assert f'"{value}"' in exec_start


def proxy_unit_text(v):
    from hostmodel import fresh
    from provision.render import render

    facts = fresh().facts(proxy.facts(v))
    return render("proxy/configurable-http-proxy.service.j2", proxy.unit_context(v, facts))
