"""Ansible INI inventories and host ranges."""

from __future__ import annotations

import pytest

from provision.config import load_run
from provision.errors import ConfigError
from provision.inventory import Inventory
from provision.inventory_ini import expand_range

SITE = """\
# site inventory
[classroom]
lab[01:02] ansible_port=2222
gpu[a:b] ntp_servers="a b"   ; foreign variable

[classroom:vars]
jupyterhub_port=8001
course_term=fall

[site:children]
classroom
"""


def test_ranges():
    assert expand_range("lab[1:3]") == ["lab1", "lab2", "lab3"]
    assert expand_range("lab[01:02]") == ["lab01", "lab02"]
    assert expand_range("n[a:c]") == ["na", "nb", "nc"]


def test_ini_site(tmp_path):
    (tmp_path / "hosts").write_text(SITE)
    inv = Inventory(tmp_path)
    assert inv.hosts == ["gpua", "gpub", "lab01", "lab02"]
    host = inv.resolve("lab01", {})
    assert host.vars["ansible_port"] == 2222
    assert host.vars["jupyterhub_port"] == 8001
    assert inv.groups_of("gpua") == ["all", "site", "classroom"]
    assert inv.resolve("gpua", {}).vars["ntp_servers"] == "a b"


def load(tmp_path, files: dict[str, str]) -> Inventory:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Inventory(tmp_path)


def test_values_are_typed_as_ansible_types_them(tmp_path):
    inv = load(tmp_path, {"hosts": (
        "[lab]\n"
        "lab1 n=8000 q=\"8000\" s='a b' t=True f=false y=yes x=1.5 e=\n"
        "[lab:vars]\n"
        "port=8001\nquoted=\"8001\"\nflag=True\ntext=hello world\n")})
    v = inv.resolve("lab1", {}).vars
    assert (v["n"], v["q"], v["s"], v["t"], v["f"], v["y"], v["x"], v["e"]) == \
        (8000, "8000", "a b", True, False, True, 1.5, "")
    assert (v["port"], v["quoted"], v["flag"], v["text"]) == (8001, "8001", True, "hello world")


def test_a_directory_mixing_ini_and_yaml_with_group_and_host_vars(tmp_path):
    inv = load(tmp_path, {
        "site.ini": "[classroom]\nlab[1:2]\n[staff]\nadmin1\n",
        "extra.yml": "all:\n  children:\n    gpu:\n      hosts:\n        gpu[1:2]:\n",
        "group_vars/classroom.yml": "jupyterhub_port: 8001\n",
        "host_vars/lab2.yml": "jupyterhub_port: 8002\n",
    })
    assert inv.hosts == ["admin1", "gpu1", "gpu2", "lab1", "lab2"]
    assert inv.resolve("lab1", {}).vars["jupyterhub_port"] == 8001
    assert inv.resolve("lab2", {}).vars["jupyterhub_port"] == 8002  # host_vars win


def test_errors_name_the_ini_file_and_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"hosts": "[lab]\nlab1 ansible_port\n[lab:wat]\nx\n[gpu]\n"
                                 "gpu1 a=\"unclosed\n"})
    text = "\n".join(err.value.problems)
    assert "hosts:2: expected key=value, found 'ansible_port'" in text
    assert "hosts:3: unknown section [lab:wat]" in text
    assert "hosts:6: no closing quotation" in text


def test_a_variable_problem_names_the_ini_line(tmp_path):
    load(tmp_path / "inv", {"hosts": "[lab]\nlab1\n[lab:vars]\nlab_x=1\njupyterhub_prot=8000\n"})
    with pytest.raises(ConfigError) as err:
        load_run(tmp_path / "inv", "all")
    text = "\n".join(err.value.problems)
    assert "hosts:4: lab_x: unknown variable 'lab_x'" in text, text
    assert "hosts:5: jupyterhub_prot: unknown variable 'jupyterhub_prot' (did you mean " \
           "'jupyterhub_port'?)" in text, text
