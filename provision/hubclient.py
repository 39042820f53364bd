"""A small JupyterHub HTTP client: log in like a browser, start a server, open JupyterLab,
run code in a kernel.

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
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


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


def trusted_context(server_name: str, cafile: str | None = None) -> ssl.SSLContext:
    """Trusts the system's CAs, or only those in ``cafile`` (a private CA's roots), and
    checks ``server_name`` in the certificate."""
    ctx = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.server_name = server_name
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    else:
        ctx.load_default_certs()
    return ctx


class KernelDied(HubError):
    """The kernel died (or was restarted) while running the code."""


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

    def _headers(self, accept: str) -> dict[str, str]:
        """Accept, and the _xsrf token back as a header, as the hub's own pages send it."""
        token = self._xsrf()
        return {"Accept": accept, **({"X-XSRFToken": token} if token else {})}

    def request(self, path: str, *, method: str = "GET", data: dict | None = None,
                json_body: dict | None = None, follow: bool = True) -> Response:
        body = None
        headers = self._headers("application/json, text/html")
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
        """Start ``username``'s server and return the user's model once it is ready.

        Follows the spawn's progress stream, as the hub's spawn-pending page does in a
        browser (one long request, not a poll per second: a class logging in at once
        would otherwise cost the hub more than the spawns themselves).
        """
        r = self.request(f"hub/api/users/{username}/server", method="POST", json_body={})
        if r.status not in (201, 202, 400):  # 400: already running
            raise HubError(f"starting {username}'s server answered {r.status}: {r.body[:300]}")
        deadline = time.monotonic() + wait
        if r.status == 202:
            self._follow_progress(username, deadline)
        while True:
            info = self.user(username)
            server = (info.get("servers") or {}).get("", {})
            if server.get("ready"):
                return info
            if not info.get("pending") and not server:
                raise HubError(f"{username}'s server stopped while starting (Spawn failed?)")
            if time.monotonic() > deadline:
                raise HubError(f"{username}'s server was not ready after {wait:.0f}s")
            time.sleep(1)

    def _follow_progress(self, username: str, deadline: float) -> None:
        """Read the spawn's event stream until it says ready or failed (or ends)."""
        path = f"hub/api/users/{username}/server/progress"
        req = urllib.request.Request(self.url(path), headers=self._headers("text/event-stream"))
        try:
            with self.opener.open(req, timeout=max(1.0, deadline - time.monotonic())) as resp:
                for raw in resp:
                    line = raw.decode("utf-8", "replace").strip()
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("failed"):
                            raise HubError(f"{username}'s server failed to start: "
                                           f"{event.get('message', '')}")
                        if event.get("ready"):
                            return
                    if time.monotonic() > deadline:
                        return
        except urllib.error.HTTPError:
            return  # no stream (an older hub): the caller polls
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(f"{self.url(path)}: {getattr(exc, 'reason', exc)}") from exc

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

    def xsrf_for(self, path: str) -> str:
        """The _xsrf cookie a browser sends with ``path`` (the hub and each user's server
        set their own, on their own paths)."""
        want = urlsplit(self.url(path)).path
        found = [c for c in self.jar if c.name == "_xsrf" and want.startswith(c.path)]
        if not found:
            raise HubError(f"no _xsrf cookie for {want}")
        return max(found, key=lambda c: len(c.path)).value

    def start_kernel(self, user: str) -> str:
        """POST /user/<name>/api/kernels with the XSRF header, as JupyterLab does."""
        path = f"user/{user}/api/kernels"
        req = urllib.request.Request(self.url(path), data=b'{"name": "python3"}', method="POST",
                                     headers={"Content-Type": "application/json",
                                              "X-XSRFToken": self.xsrf_for(path)})
        with self.opener.open(req, timeout=self.timeout) as resp:
            if resp.status != 201:
                raise HubError(f"starting a kernel for {user} answered {resp.status}")
            return json.loads(resp.read())["id"]

    def execute(self, user: str, kernel: str, code: str, wait: float = 60) -> str:
        """Run ``code`` in ``kernel`` over its websocket (Jupyter messaging protocol 5.3);
        returns the execute_result's text/plain ('' for code without a result).

        A kernel that dies while running it (killed for exceeding a memory limit) is a
        ``KernelDied``. Needs the websocket-client package (the test extras).
        """
        import websocket  # only here: a dependency of the tests and the bench, not of runs

        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = (f"{scheme}://{parts.netloc}{parts.path}user/{user}/api/kernels/{kernel}/"
                  f"channels?session_id={uuid.uuid4().hex}")
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        sslopt = {"context": self.context} if self.context else {}
        ws = websocket.create_connection(ws_url, cookie=cookies, timeout=wait, sslopt=sslopt,
                                         origin=f"{parts.scheme}://{parts.netloc}")
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                           "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False,
                            "stop_on_error": True},
            }))
            deadline = time.monotonic() + wait
            result = ""
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(ws.recv())
                except websocket.WebSocketException as exc:
                    raise HubError(f"{code!r}: the kernel's websocket: {exc}") from exc
                state = msg.get("content", {}).get("execution_state")
                if msg["msg_type"] == "status" and state in ("restarting", "dead"):
                    raise KernelDied(f"the kernel died running {code!r} ({state})")
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    raise HubError(f"{code!r} failed: {msg['content']}")
                if msg["msg_type"] == "execute_result":
                    result = msg["content"]["data"]["text/plain"]
                if msg["msg_type"] == "status" and state == "idle":
                    return result
            raise HubError(f"{code!r} did not finish within {wait:.0f}s")
        finally:
            ws.close()
