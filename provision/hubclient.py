"""A small JupyterHub HTTP client: log in like a browser, start a server, open JupyterLab.

Used by ``invoke verify --smoke`` and the end-to-end tests, so the check a sysadmin runs
and the check CI runs are the same code. Only the standard library: cookies, the _xsrf
token (sent back as a form field and an ``X-XSRFToken`` header) and redirects.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


class HubError(Exception):
    """The hub did not behave as a working hub should; the message says what happened."""


@dataclass
class Response:
    status: int
    url: str
    body: str
    headers: dict[str, str]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


class NamedContext(ssl.SSLContext):
    """Verifies the server's certificate for ``server_name`` while connecting to an address
    that is not that name (a lab host reached through a 127.0.0.1 port forward)."""

    server_name: str = ""

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):  # noqa: ANN001, ANN002, ANN003
        return super().wrap_socket(sock, *args, server_hostname=self.server_name, **kwargs)


def pinned_context(pem: str, server_name: str) -> ssl.SSLContext:
    """Trusts exactly this certificate (read from the host over a checked SSH connection)
    and checks ``server_name`` in it: full verification, no CA needed."""
    ctx = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.server_name = server_name
    ctx.load_verify_locations(cadata=pem)
    return ctx


class HubClient:
    """One browser-like session against a hub at ``base`` (e.g. http://127.0.0.1:28001/)."""

    def __init__(self, base: str, timeout: float = 15.0,
                 context: ssl.SSLContext | None = None) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.timeout = timeout
        self.context = context
        self.jar = http.cookiejar.CookieJar()
        handlers: list = [urllib.request.HTTPCookieProcessor(self.jar)]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)
        self.plain = urllib.request.build_opener(*handlers, _NoRedirect)

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base, path.lstrip("/"))

    def _xsrf(self) -> str | None:
        return next((c.value for c in self.jar if c.name == "_xsrf"), None)

    def request(self, path: str, *, method: str = "GET", data: dict | None = None,
                json_body: dict | None = None, follow: bool = True) -> Response:
        body = None
        headers = {"Accept": "application/json, text/html"}
        token = self._xsrf()
        if token:
            headers["X-XSRFToken"] = token
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url(path), data=body, method=method, headers=headers)
        opener = self.opener if follow else self.plain
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                return Response(resp.status, resp.geturl(), resp.read().decode("utf-8", "replace"),
                                dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.geturl() or self.url(path),
                            exc.read().decode("utf-8", "replace"), dict(exc.headers or {}))
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(f"{self.url(path)}: {getattr(exc, 'reason', exc)}") from exc

    def api_version(self) -> str:
        r = self.request("hub/api")
        if r.status != 200:
            raise HubError(f"{self.url('hub/api')} answered {r.status}")
        return json.loads(r.body)["version"]

    def login(self, username: str, password: str, otp: str | None = None) -> None:
        page = self.request("hub/login")
        if page.status != 200:
            raise HubError(f"login page answered {page.status}")
        form = {"username": username, "password": password}
        if otp is not None:
            form["otp"] = otp
        m = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.body)
        if m or self._xsrf():
            form["_xsrf"] = m.group(1) if m else self._xsrf()
        r = self.request("hub/login", method="POST", data=form, follow=False)
        if r.status not in (302, 303) or "hub/login" in r.headers.get("Location", ""):
            raise HubError(f"login as {username} was refused (HTTP {r.status})")
        # Visit the hub once so the session cookies (and a fresh _xsrf) are set.
        self.request("hub/home")

    def user(self, username: str) -> dict:
        r = self.request(f"hub/api/users/{username}")
        if r.status != 200:
            raise HubError(f"GET hub/api/users/{username} answered {r.status}: {r.body[:200]}")
        return json.loads(r.body)

    def start_server(self, username: str, wait: float = 120.0) -> dict:
        r = self.request(f"hub/api/users/{username}/server", method="POST", json_body={})
        if r.status not in (201, 202, 400):  # 400: already running
            raise HubError(f"starting {username}'s server answered {r.status}: {r.body[:300]}")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            info = self.user(username)
            server = (info.get("servers") or {}).get("", {})
            if server.get("ready"):
                return info
            if not info.get("pending") and not server:
                raise HubError(f"{username}'s server stopped while starting (Spawn failed?)")
            time.sleep(1)
        raise HubError(f"{username}'s server was not ready after {wait:.0f}s")

    def stop_server(self, username: str, wait: float = 60.0) -> None:
        self.request(f"hub/api/users/{username}/server", method="DELETE")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not (self.user(username).get("servers") or {}):
                return
            time.sleep(1)
        raise HubError(f"{username}'s server did not stop within {wait:.0f}s")

    def open_lab(self, username: str) -> Response:
        r = self.request(f"user/{username}/lab")
        if r.status != 200 or "JupyterLab" not in r.body:
            raise HubError(f"user/{username}/lab answered {r.status} without JupyterLab "
                           f"(at {r.url})")
        return r

    def smoke(self, username: str, password: str, otp: str | None = None) -> str:
        """Log in, start the server, load JupyterLab; returns a one-line summary."""
        start = time.monotonic()
        self.login(username, password, otp)
        self.start_server(username)
        self.open_lab(username)
        return f"{username}: login, spawn and JupyterLab ok in {time.monotonic() - start:.1f}s"
