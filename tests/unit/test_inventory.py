"""Inventory (Ansible YAML), variable precedence, host patterns and validation."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.config import load_run, parse_cli_vars
from provision.errors import ConfigError
from provision.inventory import Inventory

HOSTS_YML = """\
all:
  hosts:
    solo:
  children:
    classroom:
      hosts:
        lab1:
        lab2:
        lab10:
      children:
        gpu:
          hosts:
            gpu1:
    staff:
      hosts:
        admin1:
"""


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def problems_of(err: pytest.ExceptionInfo[ConfigError]) -> str:
    return "\n".join(err.value.problems)


# ----------------------------------------------------------------------- precedence
# Each layer sets jupyterhub_default_url; with layers 1..n present, layer n must win.
LAYERS: list[tuple[str, dict[str, str]]] = [
    ("/lab", {}),  # role default
    ("/all-inline", {"hosts.yml": "all.vars"}),
    ("/all-file", {"group_vars/all.yml": ""}),
    ("/classroom-inline", {"hosts.yml": "classroom.vars"}),
    ("/classroom-file", {"group_vars/classroom/web.yml": ""}),
    ("/gpu-inline", {"hosts.yml": "gpu.vars"}),
    ("/gpu-file", {"group_vars/gpu.yaml": ""}),
    ("/host-entry", {"hosts.yml": "gpu1"}),
    ("/host-file", {"host_vars/gpu1.yml": ""}),
    ("/cli", {"--var": ""}),
]


def layered_inventory(root: Path, upto: int) -> tuple[Path, list[str]]:
    present = {value for value, _ in LAYERS[1:upto + 1]}

    def at(value: str, indent: int, key: str = "jupyterhub_default_url") -> str:
        return f"{' ' * indent}{key}: {value}\n" if value in present else ""

    hosts = "all:\n"
    if "/all-inline" in present:
        hosts += "  vars:\n" + at("/all-inline", 4)
    hosts += "  children:\n    classroom:\n      hosts:\n        lab1:\n"
    if "/classroom-inline" in present:
        hosts += "      vars:\n" + at("/classroom-inline", 8)
    hosts += "      children:\n        gpu:\n          hosts:\n            gpu1:\n"
    hosts += at("/host-entry", 14)
    if "/gpu-inline" in present:
        hosts += "          vars:\n" + at("/gpu-inline", 12)
    files = {"hosts.yml": hosts}
    for value, where in LAYERS[2:]:
        rel = next(iter(where))
        if value in present and "/" in rel:
            files[rel] = f"jupyterhub_default_url: {value}\n"
    write_tree(root, files)
    cli = ["jupyterhub_default_url=/cli"] if "/cli" in present else []
    return root, cli


@pytest.mark.parametrize("upto", range(len(LAYERS)), ids=[v for v, _ in LAYERS])
def test_precedence_later_layer_wins(tmp_path, upto):
    root, cli = layered_inventory(tmp_path, upto)
    host = load_run(root, "gpu1", cli).hosts[0]
    want, where = LAYERS[upto]
    assert host.vars["jupyterhub_default_url"] == want
    origin = host.origin("jupyterhub_default_url")
    if upto == 0:
        assert origin.startswith("(default)")
    elif "--var" in where:
        assert origin.startswith("command line")
    else:
        assert next(iter(where)) in origin, origin


def test_groups_of_a_host_go_from_general_to_specific(tmp_path):
    write_tree(tmp_path, {"hosts.yml": HOSTS_YML})
    assert Inventory(tmp_path).groups_of("gpu1") == ["all", "classroom", "gpu"]


def test_host_vars_folder_and_several_inventory_files(tmp_path):
    write_tree(tmp_path, {
        "hosts.yml": HOSTS_YML,
        "lab.yml": "all:\n  hosts:\n    lab7:\n      ansible_port: 22207\n",
        "host_vars/lab7/net.yml": "jupyterhub_port: 8007\n",
        "host_vars/lab7/sub/more.yaml": "jupyterhub_default_url: /tree\n",
        "host_vars/lab7/README.txt": "not yaml: ignored",
    })
    host = load_run(tmp_path, "lab7").hosts[0]
    assert (host.vars["ansible_port"], host.vars["jupyterhub_port"]) == (22207, 8007)
    assert host.vars["jupyterhub_default_url"] == "/tree"
    assert "host_vars/lab7/net.yml" in host.origin("jupyterhub_port")


# ------------------------------------------------------------------------ selection
@pytest.mark.parametrize(("pattern", "hosts"), [
    ("lab1", ["lab1"]),
    ("all", ["admin1", "gpu1", "lab1", "lab2", "lab10", "solo"]),
    ("classroom", ["gpu1", "lab1", "lab2", "lab10"]),
    ("gpu", ["gpu1"]),
    ("lab*", ["lab1", "lab2", "lab10"]),
    ("lab?", ["lab1", "lab2"]),
    ("classroom,!gpu", ["lab1", "lab2", "lab10"]),
    ("all,!classroom", ["admin1", "solo"]),
    ("all, !lab1, !staff", ["gpu1", "lab2", "lab10", "solo"]),
    ("lab10,admin1", ["admin1", "lab10"]),
    ("staff,solo,lab2", ["admin1", "lab2", "solo"]),
    ("st*", ["admin1"]),  # a glob matches group names too
])
def test_select(tmp_path, pattern, hosts):
    write_tree(tmp_path, {"hosts.yml": HOSTS_YML})
    assert Inventory(tmp_path).select(pattern) == hosts


@pytest.mark.parametrize("pattern", ["lab3", "lab1,nope", "!ghost,all", "zz*"])
def test_select_unknown_lists_hosts_and_groups(tmp_path, pattern):
    write_tree(tmp_path, {"hosts.yml": HOSTS_YML})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path).select(pattern)
    text = str(err.value)
    for name in ("admin1", "gpu1", "lab1", "lab10", "solo", "classroom", "staff", "gpu"):
        assert name in text
    assert "Hosts:" in text and "groups:" in text


@pytest.mark.parametrize("pattern", ["", " , ", "lab1,!lab1"])
def test_select_nothing_is_an_error(tmp_path, pattern):
    write_tree(tmp_path, {"hosts.yml": HOSTS_YML})
    with pytest.raises(ConfigError):
        Inventory(tmp_path).select(pattern)


# ----------------------------------------------------------------- malformed files
@pytest.mark.parametrize(("rel", "text", "line"), [
    ("hosts.yml", "all:\n  hosts:\n    lab1:\n   bad: [1,\n", 4),
    ("group_vars/all.yml", "jupyterhub_port: 8000\njupyterhub_ip: [\n", 3),
    ("host_vars/lab1.yml", "a: 1\nb: 2\n  c: 3\n", 3),
])
def test_malformed_yaml_names_file_and_line(tmp_path, rel, text, line):
    files = {"hosts.yml": HOSTS_YML}
    files[rel] = text
    write_tree(tmp_path, files)
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    msg = problems_of(err)
    assert rel in msg and "malformed YAML" in msg
    assert f"line {line}," in msg, msg


@pytest.mark.parametrize(("files", "expect"), [
    ({"hosts.yml": "lab1:\n  ansible_port: 22\n"}, "single 'all:' mapping (found lab1)"),
    ({"hosts.yml": "all:\n  hostz:\n    lab1:\n"}, "unknown key(s) hostz"),
    ({"hosts.yml": HOSTS_YML, "host_vars/lab9.yml": "jupyterhub_port: 8000\n"},
     "no host named 'lab9'"),
    ({"hosts.yml": HOSTS_YML, "group_vars/gpus.yml": "jupyterhub_port: 8000\n"},
     "no group named 'gpus'"),
    ({"hosts.yml": HOSTS_YML, "group_vars/all.yml": "- a list\n"}, "must be a mapping"),
])
def test_inventory_structure_errors(tmp_path, files, expect):
    write_tree(tmp_path, files)
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert expect in problems_of(err)


@pytest.mark.parametrize("name", [
    '"lab1\\nProxyCommand touch /tmp/pwned"',  # a second ssh_config line
    '"-oProxyCommand=x"',  # read as an option by ssh
    '"lab 1"', '"lab1;id"', '"lab1/../x"', '"lab1."', '"\'lab1\'"', '"lab1\\rx"',
])
def test_a_host_name_that_is_not_one_word_is_refused(tmp_path, name):
    write_tree(tmp_path, {"hosts.yml": f"all:\n  hosts:\n    {name}:\n    lab2:\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    text = problems_of(err)
    assert "hosts.yml: all.hosts: " in text and "is not a valid host name" in text, text
    assert "\n" not in text.split("is not a valid")[0].split(": ", 2)[-1], text


@pytest.mark.parametrize("name", ["lab1", "web-01.example.org", "10.0.0.5", "fe80::1",
                                  "gpu_2"])
def test_host_names_and_addresses_are_accepted(tmp_path, name):
    write_tree(tmp_path, {"hosts.yml": f"all:\n  hosts:\n    '{name}':\n"})
    assert Inventory(tmp_path).hosts == [name]


def test_a_bad_group_name_is_refused_in_yaml_and_ini(tmp_path):
    write_tree(tmp_path / "y", {"hosts.yml": "all:\n  children:\n    \"lab\\nx\":\n"
                                             "      hosts:\n        lab1:\n"})
    with pytest.raises(ConfigError, match=r"all.children: 'lab\\nx' is not a valid group"):
        Inventory(tmp_path / "y")
    write_tree(tmp_path / "i", {"hosts": "[lab]\nlab1\n[lab;x]\nlab2\n"})
    with pytest.raises(ConfigError, match="not a valid group name"):
        Inventory(tmp_path / "i")


def test_a_bad_host_name_in_ini_names_the_file(tmp_path):
    write_tree(tmp_path, {"hosts": "[lab]\nlab1\n-oProxyCommand=x\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert "hosts:3: not a valid host name" in problems_of(err)
    assert "ProxyCommand" not in problems_of(err)  # what is not an inventory is not echoed


def test_a_shadow_like_file_given_as_inventory_is_not_echoed(tmp_path):
    hashed = "$6$rounds=5000$salt$" + "Q" * 86
    write_tree(tmp_path, {"hosts": f"root:{hashed}:20000:0:99999:7:::\n"
                                   f"alice:{hashed}:20000:0:99999:7:::\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert "hosts:1: not a valid host name" in problems_of(err)
    assert "QQQQ" not in str(err.value) and "rounds" not in str(err.value)


HASHED = "$6$rounds=5000$salt$" + "Q" * 86
SHADOW = (f"root:{HASHED}:20000:0:99999:7:::\n"
          "daemon:*:19000:0:99999:7:::\n"
          f"alice:!{HASHED}:20000:0:99999:7:::\n")


def test_a_shadow_like_file_as_group_vars_is_refused_without_echoing_it(tmp_path):
    # Each line of a shadow file ends in ':', so YAML reads the file as a mapping whose
    # keys are the lines: it was ignored as another playbook's variables.
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n",
                          "group_vars/all.yml": SHADOW})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    text = str(err.value)
    assert "group_vars/all.yml: line 1: a key that looks like a password hash is not a " \
           "valid variable name" in text
    assert "group_vars/all.yml: line 3: a key that looks like a password hash" in text
    # a key without a hash: only a bounded, escaped prefix of it
    assert "line 2: the key 'daemon:*:19000:0:999'... is not a valid variable name" in text
    assert "QQQQ" not in text and "rounds" not in text and "salt" not in text


@pytest.mark.parametrize("key", ["$y$j9T$abc", "$2b$10$abc", "x$1$y", "a$5$b", "$gy$x$y"])
def test_a_key_with_any_password_hash_marker_is_never_echoed(tmp_path, key):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n",
                          "host_vars/lab1.yml": f"'{key}': 1\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert "host_vars/lab1.yml: line 1: a key that looks like a password hash" in str(err.value)
    assert key not in str(err.value) and "abc" not in str(err.value)


def test_a_duplicate_key_that_looks_like_a_hash_is_not_echoed(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n",
                          "group_vars/all.yml": f"root:{HASHED}::\nroot:{HASHED}::\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert "line 2: a key that looks like a password hash is given twice (first on line 1)" \
        in str(err.value)
    assert "QQQQ" not in str(err.value)


@pytest.mark.parametrize("files, expect", [
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n      bad-key: 1\n"},
     "hosts.yml: line 4: all.hosts.lab1: the key 'bad-key' is not a valid variable name"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n  vars:\n    \"9x\": 2\n"},
     "hosts.yml: line 5: all.vars: the key '9x' is not a valid variable name"),
    ({"hosts.yml": "all:\n  children:\n    g:\n      hosts:\n        lab1:\n      vars:\n"
                   "        1: x\n"},
     "hosts.yml: line 7: all.children.g.vars: the key 1 is not a valid variable name"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n      class: 1\n"},
     "the key 'class' is not a valid variable name (a Python keyword)"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n      caf\u00e9: 1\n"},
     "the key 'caf\u00e9' is not a valid variable name"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n", "host_vars/lab1.yml": "a b: 1\n"},
     "host_vars/lab1.yml: line 1: the key 'a b' is not a valid variable name"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n",
      "group_vars/all.yml": '"\\x1b[31mred\\u202e": 1\n'},
     "group_vars/all.yml: line 1: the key '\\x1b[31mred\\u202e' is not a valid variable"),
    ({"hosts.yml": "all:\n  hosts:\n    lab1:\n", "group_vars/all.yml": "x" * 50 + "-: 1\n"},
     f"line 1: the key '{'x' * 20}'... is not a valid variable name"),
    ({"hosts": "[lab]\nlab1 ok=1 bad.k=2\n"},
     "hosts:2: all.children.lab.hosts.lab1: the key 'bad.k' is not a valid variable name"),
    ({"hosts": "[lab]\nlab1\n\n[lab:vars]\nx-y=3\n"},
     "hosts:5: all.children.lab.vars: the key 'x-y' is not a valid variable name"),
])
def test_a_variable_name_that_is_not_an_identifier_is_refused(tmp_path, files, expect):
    write_tree(tmp_path, files)
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert expect in problems_of(err)


def test_a_bad_name_in_a_range_of_hosts_is_reported_once(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab[1:50]:\n      a-b: 1\n"})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert len(err.value.problems) == 1


def test_many_bad_names_in_one_file_are_summarised(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n",
                          "group_vars/all.yml": "".join(f"k-{i}: 1\n" for i in range(40))})
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert len(err.value.problems) == 6
    assert "35 more keys that are not valid variable names" in err.value.problems[-1]


@pytest.mark.parametrize("content, message", [
    (b"jupyterhub_port: \xff\xfe\n", "is not UTF-8 text"),
    (b"x: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
    (b"users:\n  - name: a\nusers:\n  - name: b\n", "line 3: the key 'users' is given twice "
                                                   "(first on line 1)"),
    (b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"b%d: &b%d [" % (i, i) + b", ".join([b"*" + (b"a" if i == 1 else b"b%d" % (i - 1))] * 9)
        + b"]\n" for i in range(1, 30)), "YAML aliases (at most 200)"),
])
def test_hostile_vars_files_are_an_error_naming_the_file(tmp_path, content, message):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n"})
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_bytes(content)
    with pytest.raises(ConfigError) as err:
        Inventory(tmp_path)
    assert "group_vars/all.yml" in problems_of(err) and message in problems_of(err)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null"])
def test_a_file_that_is_not_regular_is_refused(tmp_path, special):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n"})
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").symlink_to(special)
    with pytest.raises(ConfigError, match="group_vars/all.yml is not a regular file"):
        Inventory(tmp_path)


def test_a_huge_file_is_refused_without_reading_it(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n"})
    (tmp_path / "group_vars").mkdir()
    with open(tmp_path / "group_vars" / "all.yml", "wb") as fh:
        fh.truncate(5 * 1024 * 1024)
    with pytest.raises(ConfigError, match="more than 4194304"):
        Inventory(tmp_path)


@pytest.mark.parametrize("users, message", [
    ("users: 5", "users: must be a list"),
    ("users:\n  - {uid: 2001}", "users[0]: each user needs at least a name"),
    ("users:\n  - name: [a]", "users[0].name: user name must be a string"),
    ("users:\n  - just-a-string", "users[0]: each user needs at least a name"),
])
def test_malformed_users_are_errors_not_crashes(tmp_path, users, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_with(tmp_path, {"lab1": users + "\n"})


def test_missing_inventory(tmp_path):
    with pytest.raises(ConfigError, match="inventory not found"):
        Inventory(tmp_path / "nope")


# ------------------------------------------------------------------------ validation
def run_with(tmp_path: Path, host_vars: dict[str, str], cli: list[str] | None = None,
             pattern: str = "all") -> None:
    files = {"hosts.yml": "all:\n  hosts:\n    lab1:\n    lab2:\n"}
    files.update({f"host_vars/{h}.yml": text for h, text in host_vars.items()})
    write_tree(tmp_path, files)
    load_run(tmp_path, pattern, cli)


def test_valid_inventory_loads(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n",
                          "group_vars/all.yml": "users:\n  - {name: alice, uid: 2001}\n"})
    cfg = load_run(tmp_path, "all", ["jupyterhub_port=9000"])
    assert cfg.hosts[0].vars["jupyterhub_port"] == 9000
    assert [u["name"] for u in cfg.hosts[0].vars["users"]] == ["alice"]


@pytest.mark.parametrize(("name", "suggestion"), [
    ("jupyterhub_prot", "did you mean 'jupyterhub_port'?"),
    ("proxy_verison", "did you mean 'proxy_version'?"),
    ("wheel_sudo_nopass", "did you mean 'wheel_sudo_nopasswd'?"),
])
def test_unknown_variable_suggests_nearest(tmp_path, name, suggestion):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {"lab1": f"{name}: 8000\n"})
    msg = problems_of(err)
    assert f"unknown variable {name!r}" in msg and suggestion in msg
    assert "host_vars/lab1.yml" in msg


def test_unknown_variable_without_close_match_has_no_suggestion(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {"lab1": "lab_zzzz_qqqq: 1\n"})
    assert "did you mean" not in problems_of(err)


def test_other_playbooks_variables_are_ignored_and_listed(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n      ntp_servers: [a]\n",
                          "group_vars/all.yml": "course_term: fall\nusersx: 1\n"})
    cfg = load_run(tmp_path, "all")
    assert cfg.ignored == ["course_term", "ntp_servers", "usersx"]


@pytest.mark.parametrize("name", ["users_defalt_shell", "wheel_grp", "nodejs_src",
                                  "apache_enbled", "provision_conect_timeout", "lab_whatever",
                                  "jupyterhub_idle_timout"])
def test_a_typo_inside_our_namespace_is_still_an_error(tmp_path, name):
    with pytest.raises(ConfigError, match=f"unknown variable {name!r}"):
        run_with(tmp_path, {"lab1": f"{name}: 1\n"})


@pytest.mark.parametrize("setting, message", [
    ("ansible_connection: winrm", "ansible_connection 'winrm' is not supported"),
    ("ansible_connection: docker", "ansible_connection 'docker' is not supported"),
    ("ansible_become_method: su", "ansible_become_method 'su' is not supported (only sudo)"),
    ("ansible_become_user: postgres", "ansible_become_user 'postgres' is not supported"),
    ("ansible_ssh_common_args: -o ProxyCommand=nc", "ansible_ssh_common_args"),
    ("ansible_ssh_extra_args: -v", "ansible_ssh_extra_args is not supported"),
    ("{ansible_become: false, ansible_user: admin}", "ansible_become: false with a non-root"),
])
def test_unsupported_ways_of_reaching_a_host_are_errors(tmp_path, setting, message):
    text = setting[1:-1].replace(", ", "\n") + "\n" if setting.startswith("{") else \
        setting + "\n"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_with(tmp_path, {"lab1": text})


@pytest.mark.parametrize("setting", ["ansible_connection: ssh", "ansible_connection: local",
                                     "ansible_become: true", "ansible_become_user: root",
                                     "ansible_ssh_common_args: -o ProxyJump=ops@bastion:22"])
def test_supported_ways_of_reaching_a_host_are_accepted(tmp_path, setting):
    run_with(tmp_path, {"lab1": setting + "\n"})


def test_other_ansible_settings_are_accepted(tmp_path):
    run_with(tmp_path, {"lab1": "ansible_python_interpreter: /usr/bin/python3\n"})


def test_unknown_variable_from_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {}, cli=["jupyterhub_prot=80"])
    assert "command line" in problems_of(err) and "'jupyterhub_port'" in problems_of(err)


def test_cli_vars_are_yaml_values():
    assert parse_cli_vars(["jupyterhub_port=9000", "wheel_sudo=false", "x=", "y=a=b"]) == {
        "jupyterhub_port": 9000, "wheel_sudo": False, "x": "", "y": "a=b"}
    with pytest.raises(ConfigError, match="expected name=value"):
        parse_cli_vars(["novalue"])


@pytest.mark.parametrize("item, expect", [
    ("a-b=1", "command line: --var: the key 'a-b' is not a valid variable name"),
    (f"x{HASHED}=1", "command line: --var: a key that looks like a password hash"),
    (" =1", "expected name=value"),
])
def test_a_cli_var_name_that_is_not_an_identifier_is_refused(item, expect):
    with pytest.raises(ConfigError) as err:
        parse_cli_vars([item])
    assert expect in str(err.value) and "QQQQ" not in str(err.value)


def test_a_deeply_nested_cli_value_is_not_a_crash():
    assert isinstance(parse_cli_vars(["x=" + "[" * 100000])["x"], str)


PROBLEMS: dict[str, tuple[dict[str, str], list[str]]] = {
    "bad-port": ({"lab1": "jupyterhub_port: 70000\n"},
                 ["host_vars/lab1.yml: jupyterhub_port", "70000 is not a TCP port"]),
    "port-as-string": ({"lab1": "jupyterhub_hub_port: '8081'\n"}, ["is not a TCP port"]),
    "bad-ip": ({"lab1": "jupyterhub_hub_ip: 999.1.1.1\n"},
               ["jupyterhub_hub_ip", "'999.1.1.1' is not an IP address"]),
    "bad-base-url": ({"lab1": "jupyterhub_base_url: jhub\n"},
                     ["jupyterhub_base_url", "'jhub' is not a base URL"]),
    "base-url-without-trailing-slash": ({"lab1": "jupyterhub_base_url: /jhub\n"},
                                        ["is not a base URL"]),
    "bad-bind-url-scheme": ({"lab1": "jupyterhub_bind_url: 'ftp://:8000/'\n"},
                            ["jupyterhub_bind_url", "scheme must be http or https"]),
    "bind-url-without-port": ({"lab1": "jupyterhub_bind_url: 'http://lab1/'\n"},
                              ["give the port"]),
    "bad-user-name": ({"lab1": "users:\n  - {name: Alice}\n"},
                      ["].name: 'Alice' is not a valid user name"]),
    "system-account": ({"lab1": "users:\n  - {name: root}\n"},
                       ["].name: 'root' is a system account"]),
    "duplicate-uid": ({"lab1": "users:\n  - {name: alice, uid: 2001}\n"
                               "  - {name: bob, uid: 2001}\n"},
                      ["].uid: uid 2001 is also given to 'alice'"]),
    "user-listed-twice": ({"lab1": "users:\n  - {name: alice}\n  - {name: alice}\n"},
                          ["'alice' is listed twice"]),
    "unknown-user-field": ({"lab1": "users:\n  - {name: alice, gropus: [docker]}\n"},
                           ["unknown user field 'gropus'", "did you mean 'groups'?"]),
    "plain-password": ({"lab1": "users:\n  - {name: alice, password_hash: hunter2}\n"},
                       ["never a plain password"]),
    "admin-not-a-user": ({"lab1": "users:\n  - {name: alice}\njupyterhub_admin_users: [zed]\n"},
                         ["jupyterhub_admin_users", "'zed' is not an inventory user"]),
    "public-port-is-hub-port": ({"lab1": "jupyterhub_port: 8081\n"},
                                ["public port must differ"]),
    "otp-needs-hub-5": ({"lab1": "jupyterhub_request_otp: true\n"
                                 "jupyterhub_version: '4.1.6'\n"},
                        ["needs jupyterhub_version 5"]),
    "same-user-other-uid-on-two-hosts": (
        {"lab1": "users:\n  - {name: alice, uid: 2001}\n",
         "lab2": "users:\n  - {name: alice, uid: 2002}\n"},
        ["user 'alice' has different uids across hosts", "uid 2001 on lab1",
         "uid 2002 on lab2"]),
    "one-uid-two-users-on-two-hosts": (
        {"lab1": "users:\n  - {name: alice, uid: 2001}\n",
         "lab2": "users:\n  - {name: bob, uid: 2001}\n"},
        ["uid 2001 is given to more than one user", "alice on lab1", "bob on lab2"]),
}


@pytest.mark.parametrize("case", PROBLEMS, ids=list(PROBLEMS))
def test_each_problem_is_reported(tmp_path, case):
    host_vars, expected = PROBLEMS[case]
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, host_vars)
    msg = problems_of(err)
    for text in expected:
        assert text in msg, msg


def assert_all_reported(tmp_path: Path, cases: list[str]) -> None:
    merged: dict[str, dict[str, Any]] = {}
    for case in cases:
        for host, text in PROBLEMS[case][0].items():
            merged.setdefault(host, {})
            for key, value in (yaml.safe_load(text) or {}).items():
                if key == "users":
                    merged[host].setdefault("users", []).extend(value)
                else:
                    merged[host][key] = value
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {h: yaml.safe_dump(d) for h, d in merged.items()})
    msg = problems_of(err)
    missing = [c for c in cases if not all(t in msg for t in PROBLEMS[c][1])]
    assert not missing, f"not reported: {missing}\n{msg}"
    assert len(err.value.problems) >= len(cases)


def test_all_value_problems_reported_at_once(tmp_path):
    assert_all_reported(tmp_path, ["bad-port", "bad-ip", "bad-base-url",
                                   "bad-bind-url-scheme"])


def test_all_user_problems_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {"lab1": """\
            users:
              - {name: Alice}
              - {name: root}
              - {name: bob, uid: 2001}
              - {name: carol, uid: 2001}
            jupyterhub_admin_users: [zed]
            """})
    msg = problems_of(err)
    for text in ("'Alice' is not a valid user name", "'root' is a system account",
                 "uid 2001 is also given to 'bob'", "'zed' is not an inventory user"):
        assert text in msg, msg


def test_every_problem_reported_at_once(tmp_path):
    assert_all_reported(tmp_path, ["bad-port", "bad-ip", "bad-base-url",
                                   "bad-bind-url-scheme", "bad-user-name", "system-account",
                                   "duplicate-uid", "admin-not-a-user",
                                   "same-user-other-uid-on-two-hosts"])


def test_group_vars_of_an_empty_group_are_accepted(tmp_path):
    write_tree(tmp_path, {"hosts.yml": "all:\n  hosts:\n    lab1:\n  children:\n    spare:\n",
                          "group_vars/spare.yml": "jupyterhub_port: 8000\n"})
    assert Inventory(tmp_path).select("all") == ["lab1"]


def test_hub_port_equal_to_proxy_api_port_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {"lab1": "jupyterhub_hub_port: 8001\n"})
    assert "proxy_api_port" in problems_of(err)


@pytest.mark.parametrize("group", ["wheel", "jupyterhub-users"])
def test_user_groups_naming_a_managed_group_is_refused(tmp_path, group):
    with pytest.raises(ConfigError) as err:
        run_with(tmp_path, {"lab1": f"users:\n  - {{name: alice, admin: true}}\n"
                                    f"  - {{name: bob, groups: [docker, {group}]}}\n"})
    assert "users[1].groups" in problems_of(err)
