"""Fact collector, run on the host as ``python3 -`` (this file plus one REQUEST line).

It only reads. It returns raw material (file texts, directory listings, ``systemctl show``
output) as one JSON document; all parsing happens on the workstation in pure functions
(``provision.facts``), so parsers are unit-tested from captured output. It never returns
the contents of files marked secret nor any password hash: for passwords it returns only
the account's status and whether the stored hash equals the one the inventory wants.
"""

import binascii
import grp
import os
import pwd
import stat
import sys

# This runs at every no-op, on every host: its start-up is a no-op's remote cost. hashlib
# and subprocess are imported where they are used (a request without files or units
# needs neither), and the json module not at all: it imports re, 10 ms of a 24 ms run on
# a lab host. The request arrives as a Python literal; the answer is written by the C
# encoder the json module itself uses (``_json``), or by json where that is missing.

MAX_CONTENT = 256 * 1024


def file_fact(path, want_content, read=True):
    """stat() of path; with read, also its sha256 (and content when wanted).
    Secret files are not read at all: only their owner, mode and size matter."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as exc:
        return {"exists": False, "error": exc.strerror}
    kind = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
            else "file" if stat.S_ISREG(st.st_mode) else "other")
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    fact = {"exists": True, "type": kind, "mode": "%04o" % stat.S_IMODE(st.st_mode),
            "owner": owner, "group": group, "uid": st.st_uid, "gid": st.st_gid,
            "size": st.st_size}
    if kind == "link":
        fact["target"] = os.readlink(path)
    if kind == "file" and read:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            import hashlib

            fact["sha256"] = hashlib.sha256(data).hexdigest()
            if want_content and len(data) <= MAX_CONTENT:
                fact["content_b64"] = binascii.b2a_base64(data, newline=False).decode()
        except OSError as exc:
            fact["error"] = exc.strerror
    return fact


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def dpkg_stanzas(names):
    wanted = set(names)
    found = {}
    text = read_text("/var/lib/dpkg/status") or ""
    for stanza in text.split("\n\n"):
        if stanza.startswith("Package: "):
            name = stanza.split("\n", 1)[0][9:].strip()
            if name in wanted:
                found[name] = stanza
    return found


def venv_fact(root):
    out = {"exists": os.path.isfile(os.path.join(root, "bin", "python")), "dists": [],
           "pyvenv_cfg": read_text(os.path.join(root, "pyvenv.cfg")),
           # the pin set it was installed with (steps.pip_constraints_path)
           "constraints": read_text(os.path.join(root, "jhprovision-constraints.txt"))}
    lib = os.path.join(root, "lib")
    try:
        for pydir in os.listdir(lib):
            site = os.path.join(lib, pydir, "site-packages")
            if os.path.isdir(site):
                out["dists"].extend(d for d in os.listdir(site) if d.endswith(".dist-info"))
    except OSError:
        pass
    return out


def shadow_fact(users, compare):
    out = {}
    try:
        with open("/etc/shadow", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":")
        if len(parts) < 3 or parts[0] not in users:
            continue
        pw = parts[1]
        status = "L" if pw.startswith("!") or pw.startswith("*") else ("NP" if pw == "" else "P")
        entry = {"status": status, "last_change": parts[2],
                 "expire": parts[7] if len(parts) > 7 else "",
                 "locked_hash": pw.startswith("!") and len(pw.lstrip("!")) > 1}
        if parts[0] in compare:
            entry["password_matches"] = pw.lstrip("!") == compare[parts[0]]
        out[parts[0]] = entry
    return out


def systemctl_show(units, props):
    if not units:
        return ""
    import subprocess

    try:
        proc = subprocess.run(["systemctl", "show", "--no-pager", "-p", ",".join(props)]
                              + list(units), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "error: %s" % exc
    return proc.stdout


def expand(path):
    """'~alice/.ssh' is looked up in alice's real home (from the passwd database)."""
    return os.path.expanduser(path) if path.startswith("~") else path


def main(request):
    secret = set(request.get("secret", []))
    contents = set(request.get("content", []))
    files = {}
    for p in request.get("files", []):
        real = expand(p)
        if real.startswith("~"):  # no such user (yet)
            files[p] = {"exists": False}
            continue
        if p in secret:
            files[p] = file_fact(real, False, read=False)
        else:
            files[p] = file_fact(real, p in contents)
        if real != p:
            files[p]["path"] = real
    result = {
        "files": files,
        "read": {p: read_text(p) for p in request.get("read", [])},
        "dpkg": dpkg_stanzas(request.get("dpkg", [])),
        "venvs": {p: venv_fact(p) for p in request.get("venvs", [])},
        "shadow": shadow_fact(set(request.get("shadow", [])), request.get("password", {})),
        "systemd": systemctl_show(request.get("units", []), request.get("unit_props", [])),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "os_release": read_text("/etc/os-release"),
        "euid": os.geteuid(),
    }
    sys.stdout.write(dumps(result))


def _unencodable(value):
    raise TypeError("cannot encode %r" % type(value).__name__)


def dumps(obj):
    """JSON text of ``obj`` (dicts, lists, str, int, bool, None), as json.dumps writes it."""
    try:
        import _json

        encode = _json.make_encoder(None, _unencodable, _json.encode_basestring_ascii, None,
                                    ": ", ", ", False, False, False)
    except (ImportError, AttributeError, TypeError):
        import json

        return json.dumps(obj)
    return "".join(encode(obj, 0))
