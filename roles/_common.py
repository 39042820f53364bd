"""Helpers the roles share; the stack's shared values live in ``provision.stack``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from provision.stack import (  # noqa: F401 - the roles' shared names, re-exported
    USER_KEYS,
    USER_STATES,
    HubURLs,
    active_users,
    admins,
    hub_api_url,
    hub_urls,
    managed_names,
    users,
)
from provision import installer
from provision.facts import FactRequest, Facts
from provision.steps import Action, UserSpec, plan_directory, plan_pip


def home_of(facts: Any, name: str) -> str:
    """A user's home: from the host's passwd when the account exists, else the default
    useradd will give it."""
    cur = facts.users.get(name)
    return cur.home if cur else f"/home/{name}"


def user_spec(u: dict[str, Any]) -> UserSpec:
    return UserSpec(name=u["name"], uid=u["uid"], shell=u["shell"], comment=u["comment"],
                    groups=tuple(u["groups"]), password_hash=u["password_hash"],
                    state=u["state"])


# Watches a service after its (re)start or reload, on the host itself: the URL answering
# (an HTTP status below the last argument) is success; the unit failing, exiting, waiting to be
# restarted, or restarted by systemd since the check began (NRestarts, InvocationID) is a
# failure at once, not after the timeout, which only a running unit that does not answer
# yet waits for. Prints one JSON line: ok, reason, seconds, since (epoch, for the journal).
HEALTH_SCRIPT = """import json, ssl, subprocess, sys, time, urllib.error, urllib.request
unit, url, limit, below = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
props = "ActiveState,SubState,NRestarts,InvocationID,ExecMainStatus,ExecMainCode,Result"
def show():
    out = subprocess.run(["systemctl", "show", "-p", props, "--", unit],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
def done(ok, reason):
    print(json.dumps({"ok": ok, "reason": reason, "since": int(since),
                      "seconds": round(time.time() - start, 1)}))
    sys.exit(0 if ok else 1)
since = time.time() - 5
start, first, last = time.time(), show(), "no answer yet"
ctx = ssl._create_unverified_context()
while True:
    now = show()
    state, sub = now.get("ActiveState"), now.get("SubState")
    status = now.get("ExecMainStatus") or "?"
    if now.get("InvocationID") != first.get("InvocationID") or \\
            int(now.get("NRestarts") or 0) > int(first.get("NRestarts") or 0):
        done(False, "%s was restarted by systemd (its process exited, status %s)"
             % (unit, status))
    if state in ("failed", "inactive") or sub in ("auto-restart", "exited", "dead"):
        done(False, "%s is %s (%s), its process exited with status %s"
             % (unit, state, sub, status))
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx):
            done(True, "")
    except urllib.error.HTTPError as exc:
        if exc.code < below:
            done(True, "")
        last = "HTTP %d" % exc.code
    except Exception as exc:
        last = str(exc)
    if time.time() - start > limit:
        done(False, "%s is running but %s did not answer within %.0f s (%s)"
             % (unit, url, limit, last))
    time.sleep(0.25)
"""

# The start of a host-side script that calls the hub's REST API as the jhprovision
# service (its token read on the host from its 0600 file; it never leaves the host):
# argv[1:4] are the API's URL, the token file and the token's variable; call(method, path)
# returns the decoded JSON answer (None if empty). The script's own arguments follow.
HUB_API_PRELUDE = r"""import json, sys, urllib.error, urllib.parse, urllib.request
api, envfile, token_env = sys.argv[1:4]
token = [line.split("=", 1)[1].strip() for line in open(envfile)
         if line.startswith(token_env + "=")][0]
def call(method, path):
    req = urllib.request.Request(api + path, method=method, data=b"" if method == "POST"
                                 else None, headers={"Authorization": "token " + token})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return json.loads(body) if body else None
"""


def hub_api_argv(v: dict[str, Any], script: str, *args: str) -> list[str]:
    """Run ``script`` (which starts with HUB_API_PRELUDE) with the API's URL, the token
    file and ``args``."""
    from provision.stack import API_ENV_FILE, API_TOKEN_ENV

    return ["python3", "-c", script, hub_api_url(v), API_ENV_FILE, API_TOKEN_ENV, *args]


# Log lines that are not the service's own: systemd about processes left in the unit
# (users' servers, while they run inside the hub's unit).
_NOT_OURS = ("remains running after unit stopped", "Found left-over process",
             "This usually indicates unclean termination of a previous run")
_ERROR_WORDS = ("error", "traceback", "critical", "fatal", "exception", "failed", "denied",
                "unable", "cannot")


@dataclass
class Health:
    ok: bool
    reason: str
    seconds: float | None = None
    since: int | None = None


def check_health(run: Any, unit: str, url: str, limit: float, *, step: str,
                 ok_below: int = 400) -> Health:
    """Run HEALTH_SCRIPT for ``unit`` and ``url`` (answered: an HTTP status below
    ``ok_below``); what it found, in one round trip."""
    res = run.run(["python3", "-c", HEALTH_SCRIPT, unit, url, str(limit), str(ok_below)],
                  check=False, timeout=limit + 30, step=step)
    try:
        data = json.loads(res.out.strip().splitlines()[-1])
        return Health(bool(data["ok"]), str(data["reason"]), data.get("seconds"),
                      data.get("since"))
    except (ValueError, IndexError, KeyError, TypeError):
        reason = (res.err or res.out).strip().splitlines()[-1:] or [f"exit code {res.rc}"]
        return Health(res.rc == 0, reason[0])


def _journal_messages(out: str, exclude_comm: tuple[str, ...]) -> list[tuple[str, bool]]:
    """journalctl's JSON lines as (message, the service's own: not systemd's)."""
    messages = []
    for raw in out.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:  # not JSON (an old journalctl): keep the line as it is
            messages.append((raw, True))
            continue
        msg = entry.get("MESSAGE")
        if isinstance(msg, list):  # binary-safe form: a list of bytes
            msg = bytes(msg).decode("utf-8", "replace")
        if not isinstance(msg, str) or str(entry.get("_COMM", "")).startswith(exclude_comm) \
                or any(s in msg for s in _NOT_OURS):
            continue
        systemd = entry.get("_COMM") == "systemd" or str(entry.get("_PID")) == "1"
        messages.append((msg, not systemd))
    return messages


def _first_error(messages: list[tuple[str, bool]], own: bool) -> int | None:
    return next((i for i, (m, o) in enumerate(messages)
                 if (o or not own) and any(w in m.lower() for w in _ERROR_WORDS)), None)


def service_log(run: Any, unit: str, since: int | None, *, exclude_comm: tuple[str, ...] = (),
                lines: int = 15, settle: float = 3.0) -> tuple[str, str]:
    """The unit's own recent log lines (not those of ``exclude_comm`` processes, nor
    systemd's about left-over processes), the first error marked ``>>``; and that line.

    The service's own error is preferred to systemd's ("Failed with result ..."). journald
    reads a service's output through a stream and may log systemd's own lines about its
    exit first: when no line of the service's own is an error yet, the journal is read
    again (for up to ``settle`` seconds, a failure's path only)."""
    argv = ["journalctl", "--unit", unit, "--no-pager", "--output", "json", "--lines", "400"]
    if since:
        argv[3:3] = ["--since", f"@{since}"]
    deadline = time.monotonic() + settle
    while True:
        messages = _journal_messages(run.run(argv, check=False).out, exclude_comm)
        first = _first_error(messages, own=True)
        if first is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if first is None:
        first = _first_error(messages, own=False)
    start = max(0, len(messages) - lines)
    shown = [(">> " if i == first else "   ") + messages[i][0]
             for i in range(start, len(messages))]
    if first is not None and first < start:  # the first error is older than the tail
        shown[:0] = [">> " + messages[first][0], "   ..."]
    return "\n".join(shown), (messages[first][0].strip() if first is not None else "")


def installer_facts(v: dict[str, Any]) -> FactRequest:
    """What ``plan_installer`` reads."""
    if installer.kind(v) != "uv":
        return FactRequest()
    return FactRequest(venvs={installer.UV_HOME}, files={installer.UV_CACHE})


def plan_installer(v: dict[str, Any], facts: Facts) -> list[Action]:
    """Ensure the hosts' Python installer itself: with ``uv``, uv at ``UV_VERSION`` in
    ``UV_HOME`` (a virtualenv of its own, by pip: a uv of another version is put back) and
    its cache directory root's only. Every role that installs Python packages plans this
    first (the second one finds it there: nothing to do).

    Example: ``[*plan_installer(v, facts), plan_pip(facts, venv, reqs, installer=...)]``
    """
    if installer.kind(v) != "uv":
        return []
    return [plan_pip(facts, installer.UV_HOME, [f"uv=={installer.UV_VERSION}"],
                     installer="pip", name=f"uv {installer.UV_VERSION} (the Python installer)"),
            plan_directory(facts, installer.UV_CACHE, mode="0700")]
