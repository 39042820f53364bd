"""otp: one-time passwords that the hub really checks (Google Authenticator, TOTP).

With ``jupyterhub_request_otp: true`` the hub's login page asks for a code after the
password, and the hub authenticates through a PAM service of its own
(``/etc/pam.d/jupyterhub``): the system's password check, then
``pam_google_authenticator``. Each user's secret (``otp_secret`` in the inventory, made by
``invoke add-user NAME --otp``) is installed root-only in ``jupyterhub_otp_dir``, the same
on every host. Without ``jupyterhub_otp_nullok`` a user without a secret cannot log in to
the hub. Turning OTP off again makes the hub use the plain ``login`` service and removes
the PAM file this role wrote (never one without its header: the sysadmin's); the secrets
stay, so turning it on again enrols nobody anew.
"""

from __future__ import annotations

import hashlib
from typing import Any

from provision.facts import FactRequest, Facts
from provision.otp import SECRET_RE
from provision.render import render
from provision.role import HubContribution
from provision.stack import active_users, users
from provision.steps import (
    Action,
    plan_absent,
    plan_apt,
    plan_attrs,
    plan_directory,
    plan_file,
)
from provision.variables import Var

NAME = "otp"
SUMMARY = ("with `jupyterhub_request_otp`: one-time codes that PAM really checks "
           "(`pam_google_authenticator`, the hub's own PAM service, secrets root-only and "
           "the same on every host; `invoke add-user NAME --otp` enrols)")
AFTER = ("users",)

VARIABLES = [
    Var("jupyterhub_otp_nullok", False, "bool", "Let users without a one-time password "
        "secret log in with their password only (pam_google_authenticator's nullok): for a "
        "rollout period only."),
    Var("jupyterhub_otp_dir", "/var/lib/jupyterhub-otp", "dir", "Where each user's "
        "secret is kept (root only, 0700; files 0600)."),
]

def _check_secret(value: Any) -> str | None:
    if isinstance(value, str) and SECRET_RE.fullmatch(value):
        return None
    return ("must be a base32 secret (A-Z, 2-7, 16 to 128 characters, as `invoke add-user "
            "NAME --otp` makes); not shown")


# otp_secret on a user entry: base32, made by `invoke add-user NAME --otp`, masked in every
# output; installed by this role when jupyterhub_request_otp is on.
USER_FIELDS = {"otp_secret": _check_secret}

PAM_FILE = "/etc/pam.d/jupyterhub"
SERVICE = "jupyterhub"
PACKAGE = "libpam-google-authenticator"
# Google Authenticator's defaults, written into each secret file: a code is valid in the
# 30 s step it was made for and the ones on each side; at most 3 logins per 30 s; a code
# works once.
OPTIONS = ['" RATE_LIMIT 3 30', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH']


# The first line of the PAM file this role writes (templates/otp/jupyterhub.pam.j2): a
# file without it is the sysadmin's, and OTP turned off leaves it alone.
MANAGED_HEADER = b"# Managed by jhprovision (role otp)"


# No enabled(): with OTP off the role still runs, to take its PAM service away.
def otp_on(v: dict[str, Any]) -> bool:
    return bool(v["jupyterhub_request_otp"])


def secret_file(v: dict[str, Any], user: str) -> str:
    return f"{v['jupyterhub_otp_dir']}/{user}"


def stamp_file(v: dict[str, Any], user: str) -> str:
    """The secret's hash, beside it: PAM rewrites the secret file (rate limit, codes
    used), so the installed secret is compared through this, never read back."""
    return f"{v['jupyterhub_otp_dir']}/.{user}.sha256"


def _stamp(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest() + "\n"


def hub(v: dict[str, Any]) -> HubContribution:
    """The hub's PAM service with OTP on; without, PAMAuthenticator's default (login)."""
    if not otp_on(v):
        return HubContribution()
    return HubContribution(config=[("PAMAuthenticator.service", SERVICE)])


def facts(v: dict[str, Any]) -> FactRequest:
    if not otp_on(v):
        return FactRequest(content={PAM_FILE})
    req = FactRequest(dpkg={PACKAGE}, content={PAM_FILE}, files={v["jupyterhub_otp_dir"]})
    for u in users(v):
        req.secret.add(secret_file(v, u["name"]))
        req.content.add(stamp_file(v, u["name"]))
    return req


def plan_pam_gone(facts: Facts) -> Action:
    """Ensure the PAM service this role wrote is gone once OTP is off, e.g. ``rm -f --
    /etc/pam.d/jupyterhub``; a file that does not start with ``MANAGED_HEADER`` (or is
    not a regular file) is the sysadmin's and stays. The package and the secrets stay too:
    turning OTP on again must not ask everyone to enrol again."""
    f = facts.file(PAM_FILE)
    if f.type == "file" and (f.content or b"").startswith(MANAGED_HEADER):
        return plan_absent(facts, PAM_FILE)
    return Action(f"absent {PAM_FILE}" if not f.exists else f"{PAM_FILE} (not ours: kept)")


def plan(v: dict[str, Any], facts: Facts) -> list[Action]:
    if not otp_on(v):
        return [plan_pam_gone(facts)]
    actions = [
        plan_apt(facts, {PACKAGE: None}),
        plan_file(facts, PAM_FILE, render("otp/jupyterhub.pam.j2",
                                          dict(v, otp_dir=v["jupyterhub_otp_dir"]))),
        plan_directory(facts, v["jupyterhub_otp_dir"], mode="0700"),
    ]
    keep = {u["name"]: u.get("otp_secret") for u in active_users(v) if u.get("otp_secret")}
    for u in users(v):
        name, path, stamp = u["name"], secret_file(v, u["name"]), stamp_file(v, u["name"])
        if name not in keep:  # no secret (any more), locked or removed: no code works
            actions += [plan_absent(facts, path), plan_absent(facts, stamp)]
            continue
        secret = keep[name]
        what = f"one-time password secret of {name}"
        f = facts.file(path)
        if facts.file(stamp).content == _stamp(secret).encode() and f.type == "file":
            # PAM writes it back 0400 after a login: root-only either way
            mode = f.mode if f.mode in ("0400", "0600") else "0600"
            actions.append(plan_attrs(facts, path, mode=mode, name=what))
        else:
            act = plan_file(facts, path, "\n".join([secret, *OPTIONS]) + "\n", mode="0600",
                            secret=True)
            act.name = what
            actions.append(act)
        actions.append(plan_file(facts, stamp, _stamp(secret), mode="0600"))
    return actions
