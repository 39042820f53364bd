"""Helpers the roles share; the stack's shared values live in ``provision.stack``."""

from __future__ import annotations

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
from provision.steps import UserSpec


def home_of(facts: Any, name: str) -> str:
    """A user's home: from the host's passwd when the account exists, else the default
    useradd will give it."""
    cur = facts.users.get(name)
    return cur.home if cur else f"/home/{name}"


def user_spec(u: dict[str, Any]) -> UserSpec:
    return UserSpec(name=u["name"], uid=u["uid"], shell=u["shell"], comment=u["comment"],
                    groups=tuple(u["groups"]), password_hash=u["password_hash"],
                    state=u["state"])


# Polls a URL from the host itself until it answers (handlers: after a restart or reload).
# The connection never leaves the host and checks routing, not identity: no certificate
# verification, so Apache's self-signed certificate is fine here.
WAIT_SCRIPT = """import ssl, sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
ctx = ssl._create_unverified_context()
deadline, last = time.time() + limit, None
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
            sys.stdout.write(r.read().decode()[:500])
            sys.exit(0)
    except Exception as exc:
        last = exc
        time.sleep(0.3)
sys.stderr.write("no answer from %s after %.0fs: %s\\n" % (url, limit, last))
sys.exit(1)
"""


def wait_for_url(run: Any, url: str, limit: float, *, step: str) -> Any:
    """Run WAIT_SCRIPT on the host; the result's rc is 0 once ``url`` answered."""
    return run.run(["python3", "-c", WAIT_SCRIPT, url, str(limit)], check=False,
                   timeout=limit + 30, step=step)
