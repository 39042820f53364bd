"""One-time passwords (TOTP, RFC 6238) as Google Authenticator makes and checks them.

A user's secret is made here, on the workstation, recorded with the user in the inventory
(users.yml, 0600, masked in every output like a password hash) and installed by the otp
role on every host, so one authenticator entry works for the whole lab.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from urllib.parse import quote

SECRET_RE = re.compile(r"[A-Z2-7]{16,128}")
ISSUER = "JupyterHub lab"


def new_secret() -> str:
    """160 random bits, base32 (what Google Authenticator's own tool makes)."""
    return base64.b32encode(secrets.token_bytes(20)).decode()


def code(secret: str, at: float | None = None, *, step: int = 30, digits: int = 6) -> str:
    """The code an authenticator shows for ``secret`` at time ``at`` (default: now)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def uri(user: str, secret: str, issuer: str = ISSUER) -> str:
    """The otpauth:// URI an authenticator app scans."""
    label = quote(f"{issuer}:{user}")
    return (f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}"
            "&algorithm=SHA1&digits=6&period=30")


def qr_text(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a terminal."""
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()
