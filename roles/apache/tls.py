"""apache's TLS: the certificate of ``apache_tls: selfsigned`` (made once on the host, its
key never leaving it) and of ``files`` (read on the workstation, checked, uploaded), and
the certificate checks ``acme`` shares (``cert_problem``, ``subject_alt_name``).

``off`` needs nothing here; ``acme`` is ``acme.py`` (mod_md gets and renews its
certificate by itself).
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

from provision.errors import ProvisionError
from provision.facts import Facts
from provision.steps import Action, Command, _attr_ops, plan_directory, plan_file

from .site import FILES_CRT, FILES_KEY, RELOAD, SELFSIGNED_CRT, SELFSIGNED_KEY, TLS_DIR, Site

RENEW_BEFORE = datetime.timedelta(days=30)


# ------------------------------------------------------------------------- validation
def read_pem(path: str | None) -> tuple[bytes | None, str | None]:
    """The PEM file at ``path`` on the workstation, or why it cannot be used."""
    if not path:
        return None, "must be set with apache_tls: files"
    from provision.errors import ConfigError
    from provision.files import read_text

    try:  # a regular file of at most 4 MiB, PEM text (never /dev/zero or a FIFO)
        return read_text(path, what="on this machine", limit=1024 * 1024).encode(), None
    except ConfigError as exc:
        return None, str(exc)


def check_tls_files(cert_path: str | None, key_path: str | None) -> list[tuple[str, str]]:
    """The certificate and key exist here, parse, and belong together (a mismatched pair
    would pass apache2ctl configtest and then stop Apache at its reload)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems = []
    cert_pem, why = read_pem(cert_path)
    if why:
        problems.append(("apache_tls_cert_file", why))
    key_pem, why = read_pem(key_path)
    if why:
        problems.append(("apache_tls_key_file", why))
    if problems:
        return problems
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return [("apache_tls_cert_file", f"{cert_path} is not a PEM certificate")]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return [("apache_tls_key_file", f"{key_path} is not an unencrypted PEM private key "
                 "(Apache would ask for a passphrase at every start)")]
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        return [("apache_tls_key_file", f"{key_path} is not the private key of the "
                 f"certificate {cert_path}")]
    return []


# ----------------------------------------------------------------------------- steps
# Runs as `sh -c SCRIPT sh KEY CRT CN SAN DAYS`. The key is made on the host, 0600 from
# the start (umask), and never leaves it; both files replace the old ones by rename.
SELFSIGNED_SCRIPT = r"""set -eu
key=$1 crt=$2 cn=$3 san=$4 days=$5
umask 077
tk=$(mktemp "$key.XXXXXX")
tc=$(mktemp "$crt.XXXXXX")
trap 'rm -f -- "$tk" "$tc"' EXIT INT TERM HUP
if ! out=$(openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$days" \
    -subj "/CN=$cn" -addext "subjectAltName=$san" -keyout "$tk" -out "$tc" 2>&1); then
  printf '%s\n' "$out" >&2
  exit 1
fi
chmod 0644 "$tc"
mv -f -- "$tk" "$key"
mv -f -- "$tc" "$crt"
trap - EXIT INT TERM HUP
"""


def subject_alt_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def cert_problem(pem: bytes | None, name: str, now: datetime.datetime | None = None,
                 renew_before: datetime.timedelta = RENEW_BEFORE) -> str | None:
    """Why the certificate in ``pem`` does not serve ``name`` (or will not within
    ``renew_before``), or None."""
    from cryptography import x509

    if not pem:
        return "no certificate"
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return "the certificate cannot be read or has no subjectAltName"
    found = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    found += [str(n) for n in sans.get_values_for_type(x509.IPAddress)]
    want = str(ipaddress.ip_address(name)) if subject_alt_name(name).startswith("IP") \
        else name
    if want not in found:
        return f"the certificate is for {', '.join(found) or 'nothing'}, not {name}"
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - now < renew_before:
        return f"the certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def plan_selfsigned(facts: Facts, s: Site, days: int) -> Action:
    """Ensure a self-signed certificate for ``s.server_name``, made on the host once.

    Made again only when the key is missing, the certificate is for another name, or it
    expires within 30 days. Example: ``plan_selfsigned(facts, site(v), 3650)``
    """
    act = Action(f"self-signed certificate {SELFSIGNED_CRT}", notify=(RELOAD,))
    key, crt = facts.file(SELFSIGNED_KEY), facts.file(SELFSIGNED_CRT)
    why = "no key" if not key.exists or not key.size else cert_problem(crt.content,
                                                                      s.server_name)
    if why:
        act.ops.append(Command(
            ["sh", "-c", SELFSIGNED_SCRIPT, "sh", SELFSIGNED_KEY, SELFSIGNED_CRT,
             s.server_name, subject_alt_name(s.server_name), str(days)],
            display=f"openssl req -x509 ... (CN={s.server_name}, key made and kept on the "
                    "host, 0600)"))
        act.diff = f"+ {SELFSIGNED_CRT} for {s.server_name}, {days} days ({why})"
        return act
    ops, lines = _attr_ops(SELFSIGNED_KEY, key, "0600", "root", "root")
    more, more_lines = _attr_ops(SELFSIGNED_CRT, crt, "0644", "root", "root")
    act.ops, act.diff = ops + more, "\n".join(lines + more_lines)
    return act


def _tls_file(v: dict[str, Any], var: str) -> bytes:
    data, why = read_pem(v.get(var))
    if why:
        raise ProvisionError(f"{var}: {why}", host=v.get("inventory_hostname"),
                             step="tls files")
    return data or b""


def plan_tls(v: dict[str, Any], facts: Facts, s: Site) -> list[Action]:
    """The certificate and key of ``apache_tls: selfsigned`` or ``files`` (nothing for the
    other modes). Example: ``plan_tls(v, facts, site(v))``"""
    if s.tls not in ("selfsigned", "files"):
        return []
    # Only root reads them: Apache's parent process loads keys before dropping to
    # www-data.
    actions = [plan_directory(facts, TLS_DIR, mode="0700")]
    if s.tls == "selfsigned":
        actions.append(plan_selfsigned(facts, s, v["apache_tls_selfsigned_days"]))
    else:
        actions.append(plan_file(facts, FILES_CRT, _tls_file(v, "apache_tls_cert_file"),
                                 mode="0644", notify=(RELOAD,)))
        actions.append(plan_file(facts, FILES_KEY, _tls_file(v, "apache_tls_key_file"),
                                 mode="0600", secret=True, notify=(RELOAD,)))
    return actions
