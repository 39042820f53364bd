"""apache's ``apache_tls: acme``: Apache's own mod_md gets the certificate from the CA
over HTTP-01 and renews it; this module adds what mod_md lacks on Debian and checks it.

- the private CA's root, when there is one (``apache_acme_ca_root``);
- the message hook: mod_md's ``MDMessageCmd`` runs it (as www-data) when a renewed
  certificate is staged; it writes ``ACME_RENEWED`` (and logs its errors);
- the activation path unit, which sees that file and reloads Apache (mod_md activates a
  staged certificate only at a reload);
- the status probe: after a reload the handler polls mod_md's ``md-status`` page (bounded
  by ``apache_acme_wait``) and says whether a certificate is served, staged, refused by
  the CA, or not there yet;
- undoing all of it when ``apache_tls`` moves away from ``acme``.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from provision.errors import ProvisionError
from provision.facts import Facts
from provision.hostrun import HostRun
from provision.render import render
from provision.steps import (
    Action,
    Command,
    plan_absent,
    plan_directory,
    plan_file,
    plan_service,
    plan_unit,
)

from .site import ACME_CA_ROOT, ACME_HOOK, ACTIVATE, RELOAD, UNIT, Site, is_loopback
from .tls import cert_problem, read_pem, subject_alt_name

ACME_EVENTS = "/var/lib/apache2/jhprovision-acme"  # written by the hook, as www-data
ACME_RENEWED = f"{ACME_EVENTS}/renewed"
ACTIVATE_PATH = f"/etc/systemd/system/{ACTIVATE}.path"
ACTIVATE_SERVICE = f"/etc/systemd/system/{ACTIVATE}.service"
APACHE_USER = "www-data"


# ------------------------------------------------------------------------- validation
def check_ca_root(path: str) -> list[tuple[str, str]]:
    """The private CA's root file exists here and holds PEM certificates only."""
    from cryptography import x509

    pem, why = read_pem(path)
    if why:
        return [("apache_acme_ca_root", why)]
    try:
        x509.load_pem_x509_certificates(pem or b"")
    except ValueError:
        return [("apache_acme_ca_root", f"{path} is not a PEM certificate (or several)")]
    if b"PRIVATE KEY" in (pem or b""):
        return [("apache_acme_ca_root", f"{path} holds a private key: give the CA's "
                 "certificate only")]
    return []


def check_acme(v: dict[str, Any], s: Site) -> list[tuple[str, str]]:
    problems = []
    for key, name in [("apache_server_name", s.server_name)] + [
            ("apache_server_aliases", a) for a in s.aliases]:
        if subject_alt_name(name).startswith("IP:") or is_loopback(name):
            problems.append((key, f"{name!r}: with apache_tls: acme every name must be a "
                             "DNS name the CA can reach on port 80 (not an IP address or "
                             "localhost); set apache_server_name"))
    if v.get("apache_acme_ca_root"):
        problems += check_ca_root(v["apache_acme_ca_root"])
    return problems


# ----------------------------------------------------------------------------- steps
def _acme_context() -> dict[str, str]:
    return dict(activate_unit=ACTIVATE, events_dir=ACME_EVENTS, renewed=ACME_RENEWED,
                hook=ACME_HOOK)


def plan_acme(v: dict[str, Any], facts: Facts, s: Site) -> list[Action]:
    """What mod_md needs besides the site: the private CA's root (or none), the hook that
    MDMessageCmd runs, the directory it writes in (www-data's), and the systemd path unit
    that reloads Apache when a renewed certificate is ready."""
    actions = []
    if v.get("apache_acme_ca_root"):
        root = read_pem(v["apache_acme_ca_root"])[0] or b""
        actions.append(plan_file(facts, ACME_CA_ROOT, root, mode="0644", notify=(RELOAD,)))
    else:
        actions.append(plan_absent(facts, ACME_CA_ROOT, notify=(RELOAD,)))
    ctx = _acme_context()
    actions.append(plan_directory(facts, ACME_EVENTS, mode="0700", owner=APACHE_USER,
                                  group="root"))
    actions.append(plan_file(facts, ACME_HOOK, render("apache/md-event.sh.j2", ctx),
                             mode="0755"))
    actions.append(plan_unit(facts, ACTIVATE_SERVICE,
                             render("apache/acme-activate.service.j2", ctx)))
    actions.append(plan_unit(facts, ACTIVATE_PATH, render("apache/acme-activate.path.j2", ctx)))
    actions.append(plan_service(facts, f"{ACTIVATE}.path"))
    return actions


def plan_acme_waiting(v: dict[str, Any], facts: Facts, s: Site,
                      actions: list[Action]) -> Action:
    """A step that changes nothing but says when mod_md has no certificate yet (when a
    reload is due, its handler waits for the certificate and says it instead)."""
    act = Action(f"certificate for {', '.join(s.names)} from {v['apache_acme_ca']}")
    reloading = any(a.changed and RELOAD in a.notify for a in actions)
    pem = facts.file(s.md_pubcert).content
    # mod_md renews by itself: only a missing, expired or too narrow one is worth a note
    if not reloading and any(cert_problem(pem, n, renew_before=datetime.timedelta(0))
                             for n in s.names):
        act.note = (f"no certificate from the CA yet for {', '.join(s.names)}: until "
                    "mod_md has one, HTTPS serves its temporary certificate (mod_md keeps "
                    "trying by itself; `invoke verify` shows its status)")
    return act


def plan_acme_removed(facts: Facts) -> list[Action]:
    """Undo what apache_tls: acme set up besides the site (mod_md's store is left: its
    account and certificates serve a later switch back)."""
    act = Action(f"acme renewal activation ({ACTIVATE}.path) removed")
    unit = facts.unit(f"{ACTIVATE}.path")
    if facts.file(ACTIVATE_PATH).exists or unit.get("ActiveState") == "active":
        act.ops.append(Command(["systemctl", "disable", "--now", "--quiet", "--",
                                f"{ACTIVATE}.path"]))
    files = [f for f in (ACTIVATE_PATH, ACTIVATE_SERVICE, ACME_HOOK, ACME_RENEWED)
             if facts.file(f).exists]
    if files:
        act.ops.append(Command(["rm", "-f", "--", *files]))
    if facts.file(ACTIVATE_PATH).exists or facts.file(ACTIVATE_SERVICE).exists:
        act.ops.append(Command(["systemctl", "daemon-reload"]))
    if facts.file(ACME_EVENTS).exists:
        # www-data's directory: what the hook left (a temp file of a renewal cut short) is
        # unlinked, never followed (find -P); a subdirectory would make rmdir fail.
        act.ops.append(Command(["find", ACME_EVENTS, "-mindepth", "1", "-maxdepth", "1",
                                "!", "-type", "d", "-delete"]))
        act.ops.append(Command(["rmdir", "--", ACME_EVENTS]))
        files.append(ACME_EVENTS + "/")
    act.diff = "\n".join(f"- {f}" for f in files)
    return [act, plan_absent(facts, ACME_CA_ROOT, notify=(RELOAD,))]


# ------------------------------------------------------------------- after a reload
# Runs on the host as `python3 -c SCRIPT URL HOST LIMIT`: polls mod_md's status of one
# managed domain until it has an active certificate, a new one waiting for a reload, an
# error from the CA, or mod_md is not driving it (loaded by a graceful reload: its
# watchdog starts only at a full start); prints what it found as one JSON line.
MD_STATUS_SCRIPT = r"""import json, sys, time, urllib.request
url, host, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
start, why = time.monotonic(), "waiting"
while True:
    try:
        with opener.open(urllib.request.Request(url, headers={"Host": host}), timeout=5) as r:
            md = json.load(r)
    except Exception as exc:
        md = {"error": f"{url}: {exc}"}
    t = time.monotonic() - start
    renewal = md.get("renewal") or {}
    if md.get("state") == 2:
        why = "complete"
    elif renewal.get("errors"):
        why = "errors"
    elif renewal.get("finished"):
        why = "staged"
    elif t > 3 and md.get("watched") is False:
        why = "unwatched"
    if why != "waiting" or t > limit:
        break
    time.sleep(0.5)
print(json.dumps({"why": why, "seconds": round(t, 1), "md": md}))
"""


# mod_md's last error lines in Apache's log (the CA's own answer is in them), shortened.
MD_LOG_SCRIPT = ("grep -a '\\[md:error\\]' /var/log/apache2/error.log | tail -n 4 "
                 "| cut -c 1-700")


@dataclass
class MdStatus:
    why: str  # complete | staged | errors | unwatched | waiting (the wait ran out)
    md: dict[str, Any]

    @property
    def refused(self) -> bool:
        """The last attempt failed for another reason than not reaching the CA: an ACME
        error (RFC 8555 section 6.7), a challenge the CA found invalid, a local problem.
        Not reaching the CA is left to mod_md, which retries (a note, not a failure)."""
        last = (self.md.get("renewal") or {}).get("last") or {}
        if str(last.get("problem", "")).startswith("urn:ietf:params:acme:error:"):
            return True
        return not str(last.get("activity", "")).startswith("Contacting ACME server")

    @property
    def problem(self) -> str:
        """mod_md's own words for what went wrong last (or what it is waiting for)."""
        renewal = self.md.get("renewal") or {}
        last = renewal.get("last") or {}
        text = last.get("detail") or last.get("status-description") or \
            self.md.get("state-descr") or self.md.get("error") or "no status from mod_md"
        problem = last.get("problem")
        return f"{text} ({problem})" if problem else str(text)


def md_status(run: HostRun, s: Site, limit: float) -> MdStatus:
    res = run.run(["python3", "-c", MD_STATUS_SCRIPT, s.md_status_url, s.server_name,
                   str(limit)], check=False, timeout=limit + 30, step=RELOAD)
    try:
        data = json.loads(res.out.strip().splitlines()[-1])
        return MdStatus(str(data["why"]), data.get("md") or {})
    except (ValueError, IndexError, KeyError, TypeError):
        why = (res.err or res.out).strip().splitlines()[-1:] or [f"exit code {res.rc}"]
        return MdStatus("waiting", {"error": why[0]})


def wait_for_certificate(run: HostRun, s: Site) -> MdStatus:
    """After a reload with apache_tls: acme: until mod_md serves a certificate (at most
    apache_acme_wait seconds), restarting Apache once if mod_md was loaded by a graceful
    reload, reloading it once more when a new certificate is ready."""
    limit = run.vars["apache_acme_wait"]
    status = md_status(run, s, limit)
    if status.why == "unwatched":
        run.log("mod_md was loaded by a graceful reload, which does not start its renewal "
                "watchdog: Apache is restarted once")
        run.run(["systemctl", "restart", "--", UNIT], timeout=120, step=RELOAD)
        status = md_status(run, s, limit)
    if status.why == "staged":  # ready: the path unit reloads too, one more is harmless
        run.run(["systemctl", "reload", "--", UNIT], timeout=120, step=RELOAD)
        status = md_status(run, s, limit)
    return status




def certificate_after_reload(run: HostRun, s: Site) -> bool:
    """The reload handler's part for apache_tls: acme: wait (bounded) for mod_md's
    certificate; fail with the CA's own words when it refused, say so in a note when there
    is none yet. True when the certificate is served (the hub's health check through
    HTTPS follows), False when HTTPS serves mod_md's temporary one."""
    status = wait_for_certificate(run, s)
    names = ", ".join(s.names)
    if status.why == "errors" and status.refused and status.md.get("state") != 2:
        log = run.run(["sh", "-c", MD_LOG_SCRIPT], check=False, step=RELOAD).out
        raise ProvisionError(
            f"the CA {run.vars['apache_acme_ca']} gave no certificate for {names}: "
            f"{status.problem}. HTTPS serves mod_md's temporary certificate; mod_md "
            "tries again by itself", host=run.host.name, step=RELOAD,
            command=f"GET {s.md_status_url}", stderr=log)
    if status.why != "complete":
        when = "" if status.why == "errors" else f" after {run.vars['apache_acme_wait']}s"
        run.note(f"no certificate from the CA yet for {names}{when} ({status.problem}): "
                 "HTTPS serves mod_md's temporary certificate until it has one (mod_md "
                 "keeps trying by itself; `invoke verify` shows its status)")
        return False
    if (status.md.get("renewal") or {}).get("errors"):
        run.note(f"mod_md's last renewal for {names} failed ({status.problem}); the "
                 "current certificate is still valid and served")
    return True
