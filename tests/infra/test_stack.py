"""Node.js, the proxy and JupyterHub: versions, files, units, ports, and a live hub."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from provision.hubclient import HubClient, pinned_context, trusted_context
from provision import envs, installer, pins
from provision.facts import normalize_dist
from provision.requirements import req_name_version, same_version
from provision.steps import pip_constraints_path
from provision.variables import byte_count
from roles import apache, jupyterhub, nodejs, proxy, shared, userenv
from roles._common import active_users, hub_api_url, hub_urls


def test_node_version(host, hv, hfacts):
    out = host.run(f"{nodejs.bin_dir(hv, hfacts)}/node --version")
    assert out.rc == 0, f"node not runnable: {out.stderr}"
    found = out.stdout.strip().lstrip("v")
    if hv["nodejs_source"] == "pypi":
        assert found == hv["nodejs_version"], (f"node expected {hv['nodejs_version']}, "
                                               f"found {found}")
    major, rng = proxy.required_major(hv, parse_empty())
    assert major is None or int(found.split(".")[0]) >= major, (
        f"node {found} does not satisfy configurable-http-proxy's engines {rng}")


def parse_empty():
    from provision.facts import parse_collected

    return parse_collected({})


def test_proxy_version(host, hv):
    f = host.file(f"{hv['proxy_prefix']}/lib/node_modules/configurable-http-proxy/package.json")
    assert f.exists, "configurable-http-proxy is not installed"
    found = json.loads(f.content_string)["version"]
    assert found == hv["proxy_version"], (f"configurable-http-proxy expected "
                                          f"{hv['proxy_version']}, found {found}")


def _versions(host, venv: str, names: list[str]) -> dict[str, str | None]:
    """Installed versions of ``names`` in ``venv`` (None: not installed)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(n):\n"
            "    try:\n"
            "        return m.version(n)\n"
            "    except m.PackageNotFoundError:\n"
            "        return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    out = host.run(f"{venv}/bin/python -c {shlex.quote(code)} {shlex.join(names)}")
    assert out.rc == 0, f"cannot read versions in {venv}: {out.stderr.strip()[-300:]}"
    return json.loads(out.stdout)


def _pins(requirements: list[str]) -> dict[str, str | None]:
    """'name==1.0' -> {'name': '1.0'}; 'name' -> {'name': None} (any version)."""
    return dict(req_name_version(r) for r in requirements)


def _check_venv(host, venv: str, requirements: list[str]) -> None:
    want = _pins(requirements)
    found = _versions(host, venv, list(want))
    wrong = {n: (found[n], pin) for n, pin in want.items()
             if found[n] is None or (pin is not None and found[n] != pin)}
    assert not wrong, (f"{venv}: packages missing or at another version (found, wanted): "
                       f"{wrong}")


def _all_versions(host, venv: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json\n"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    out = host.run(f"{venv}/bin/python -c {shlex.quote(code)}")
    assert out.rc == 0, f"cannot list the packages in {venv}: {out.stderr.strip()[-300:]}"
    return {normalize_dist(n): v for n, v in json.loads(out.stdout).items()}


def _check_pin_set(host, hv, venv: str, requirements: list[str]) -> None:
    """Every installed package the pin set names is at the set's version (dependencies
    included), and the venv holds the constraints it was installed with."""
    text = pins.effective(pins.for_vars(hv), requirements)
    held = host.file(pip_constraints_path(venv))
    assert held.exists and held.content_string == text, (
        f"{pip_constraints_path(venv)} is not the JupyterHub {hv['jupyterhub_version']} "
        "pin set")
    pinned = pins.parse(text)
    wrong = {n: (have, pinned[n]) for n, have in _all_versions(host, venv).items()
             if n in pinned and not same_version(have, pinned[n])}
    assert not wrong, f"{venv}: not the pin set's versions (found, pinned): {wrong}"


@pytest.mark.only_if(lambda hv: installer.kind(hv) == "uv")
def test_python_installer(host, hv):
    """uv at its pinned version in its own venv, its cache root's only (the venvs it fills
    are root's and run by every user)."""
    found = _versions(host, installer.UV_HOME, ["uv"])["uv"]
    assert found == installer.UV_VERSION, (f"{installer.UV_HOME}: uv {found}, expected "
                                           f"{installer.UV_VERSION}")
    out = host.run(f"{installer.UV} --version")
    assert out.rc == 0 and installer.UV_VERSION in out.stdout, out.stderr
    cache = host.file(installer.UV_CACHE)
    assert cache.is_directory and cache.user == "root" and cache.mode == 0o700, (
        f"{installer.UV_CACHE} is not root's alone (0700)")


@pytest.mark.parametrize("which", ["hub", "users"])
def test_environment_is_the_pin_sets(host, hv, which):
    """The venv's path links to the complete environment of the pin set in use; beside
    it, at most the previous one (the way back)."""
    link, target = ((hv["jupyterhub_venv"], jupyterhub.hub_env(hv)) if which == "hub" else
                    (hv["jupyterhub_user_venv"], userenv.user_env(hv)))
    f = host.file(link)
    assert f.is_symlink and f.linked_to == target, (
        f"{link} is not a link to {target}, the environment of the JupyterHub "
        f"{hv['jupyterhub_version']} pin set (run invoke provision)")
    assert host.file(f"{target}/{envs.COMPLETE}").exists, f"{target} is not complete"
    kept = host.run(f"ls -1 {shlex.quote(envs.envs_dir(link))}").stdout.split()
    assert len(kept) <= 2, f"{envs.envs_dir(link)} holds more than the previous environment: {kept}"


def test_hub_packages(host, hv):
    _check_venv(host, hv["jupyterhub_venv"], jupyterhub.requirements(hv))
    _check_pin_set(host, hv, hv["jupyterhub_venv"], jupyterhub.requirements(hv))


def test_users_packages(host, hv):
    venv = hv["jupyterhub_user_venv"]
    _check_venv(host, venv, userenv.requirements(hv))
    _check_pin_set(host, hv, venv, userenv.requirements(hv))
    assert host.file(f"{venv}/bin/jupyterhub-singleuser").exists, "no single-user server"
    for pkg in hv["jupyterhub_user_apt_packages"]:
        assert host.package(pkg).is_installed, f"Debian package {pkg} is not installed"


@pytest.mark.only_if(lambda hv: hv["jupyterhub_spawner"] == "systemd")
def test_limits_on_running_servers(host, hv):
    """Every user's server running now is in its own unit with the inventory's limits."""
    units = host.run("systemctl list-units --plain --no-legend --state=running "
                     "'jupyter-*-singleuser.service'").stdout.split()
    units = [u for u in units if u.endswith("-singleuser.service")]
    mem, cpu = hv["jupyterhub_mem_limit"], hv["jupyterhub_cpu_limit"]
    want = {"MemoryMax": str(byte_count(mem)) if mem is not None else "infinity",
            "CPUQuotaPerSecUSec": f"{cpu:g}s" if cpu is not None else "infinity",
            "NoNewPrivileges": "yes" if hv["jupyterhub_disable_user_sudo"] else "no",
            "OOMPolicy": "continue"}
    if mem is not None:
        want["MemorySwapMax"] = "0"
    for unit in units:
        out = host.run(f"systemctl show -p {','.join(want)} -- {unit}").stdout
        found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        wrong = {k: (found.get(k), w) for k, w in want.items() if found.get(k) != w}
        assert not wrong, (f"{unit}: limits differ from the inventory (found, wanted): "
                           f"{wrong}; they apply to servers started after a change: stop "
                           "and start that server")


@pytest.mark.only_if(lambda hv: bool(hv["jupyterhub_shared_dir"]))
def test_shared_dir(host, hv):
    path = hv["jupyterhub_shared_dir"]
    f = host.file(path)
    assert f.is_directory, f"{path} is not a directory"
    assert (f.user, f.group, f.mode) == ("root", hv["wheel_group"], 0o2775), (
        f"{path}: expected root:{hv['wheel_group']} 2775, found {f.user}:{f.group} "
        f"{f.mode:04o}")
    for u in active_users(hv):
        home = host.user(u["name"]).home
        link = host.file(shared.link_path(hv, u["name"], home))
        if not host.file(os.path.dirname(link.path)).is_directory:
            continue  # an absolute notebook root the sysadmin has not made yet (a note)
        if link.exists and not link.is_symlink:
            continue  # the user's own file at that name: left alone, on purpose
        assert link.is_symlink and link.linked_to == path, (
            f"{link.path} should be a link to {path}")


def _check_file(host, path: str, *, mode: int, content: str | None = None,
                owner: str = "root") -> None:
    f = host.file(path)
    assert f.exists, f"{path} missing"
    assert (f.user, f.group, f.mode) == (owner, owner, mode), (
        f"{path}: expected {owner}:{owner} {mode:04o}, found {f.user}:{f.group} {f.mode:04o}")
    if content is not None:
        assert f.content_string == content, f"{path}: content differs from the inventory's"


def test_hub_config(host, hv):
    _check_file(host, jupyterhub.config_path(hv), mode=0o640,
                content=jupyterhub.render_config(hv))


def test_hub_unit(host, hv):
    _check_file(host, jupyterhub.UNIT_PATH, mode=0o644, content=jupyterhub.render_unit(hv))


def test_proxy_unit(host, hv, hfacts):
    from provision.render import render

    want = render("proxy/configurable-http-proxy.service.j2", proxy.unit_context(hv, hfacts))
    _check_file(host, proxy.UNIT_PATH, mode=0o644, content=want)


@pytest.mark.parametrize("which", ["proxy token", "cookie secret", "provisioner API token"])
def test_secret(host, hv, which):
    path = {"proxy token": proxy.ENV_FILE, "cookie secret": jupyterhub.secret_path(hv),
            "provisioner API token": jupyterhub.API_ENV_FILE}[which]
    f = host.file(path)
    assert f.exists, f"{path} missing"
    # Only metadata: a secret's content is never read into test output.
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600), (
        f"{path}: expected root:root 0600, found {f.user}:{f.group} {f.mode:04o}")
    assert f.size > 32, f"{path} is empty"


@pytest.mark.parametrize("unit", [proxy.UNIT, jupyterhub.UNIT])
def test_unit_running(host, unit):
    svc = host.service(unit)
    assert svc.is_enabled, f"{unit} is not enabled"
    assert svc.is_running, f"{unit} is not running"


def _listeners(host) -> set[str]:
    return {s for s in host.socket.get_listening_sockets() if s.startswith("tcp")}


def test_proxy_api_only_on_loopback(host, hv):
    port = hv["proxy_api_port"]
    listening = _listeners(host)
    mine = {s for s in listening if s.endswith(f":{port}")}
    want = f"tcp://{hv['proxy_api_ip']}:{port}"
    assert mine == {want}, f"proxy API expected only on {want}, found {sorted(mine) or 'none'}"


def test_public_port(host, hv):
    urls = hub_urls(hv)
    listening = _listeners(host)
    mine = {s for s in listening if s.endswith(f":{urls.port}")}
    if urls.ip:
        want = {f"tcp://{urls.ip}:{urls.port}"}
    else:
        want = {f"tcp://0.0.0.0:{urls.port}", f"tcp://:::{urls.port}"}
    assert mine and mine <= want, f"public port expected on {sorted(want)}, found {sorted(mine)}"


def test_hub_port(host, hv):
    port = hv["jupyterhub_hub_port"]
    mine = {s for s in _listeners(host) if s.endswith(f":{port}")}
    ip = hv["jupyterhub_hub_ip"] or "0.0.0.0"
    assert mine == {f"tcp://{ip}:{port}"}, f"hub API expected on {ip}:{port}, found {mine}"


def test_hub_api_answers(host, hv):
    out = host.run(f"curl -fsS --max-time 10 {hub_api_url(hv)}")
    assert out.rc == 0, f"{hub_api_url(hv)} did not answer: {out.stderr.strip()}"
    found = json.loads(out.stdout)["version"]
    assert found == hv["jupyterhub_version"], (f"hub version expected "
                                               f"{hv['jupyterhub_version']}, found {found}")
    public = hub_urls(hv).local_url + "hub/api"
    out = host.run(f"curl -fsS --max-time 10 {public}")
    assert out.rc == 0, f"through the proxy, {public} did not answer: {out.stderr.strip()}"


def hub_client_from_here(host, hv: dict) -> HubClient:
    """How this machine reaches the host's hub: through Apache when it is on (HTTPS
    verified against the host's own certificate), else the proxy's public port; lab hosts
    through their forwarded 127.0.0.1 ports."""
    base = hub_urls(hv).base_url
    ports = hv.get("lab_ports") or {}
    address = "127.0.0.1" if ports else (hv.get("ansible_host") or hv["inventory_hostname"])
    if not hv.get("apache_enabled"):
        port = ports.get("hub") or hub_urls(hv).port
        return HubClient(f"http://{address}:{port}{base}", timeout=30)
    s = apache.site(hv)
    if s.tls == "off":
        return HubClient(f"http://{address}:{ports.get('http') or s.http_port}{base}",
                         timeout=30)
    context = None
    if s.tls == "selfsigned":
        context = pinned_context(host.file(s.cert).content_string, s.server_name)
    elif s.tls == "acme":  # the usual CAs, or the private CA's root(s) of the inventory
        context = trusted_context(s.server_name, hv.get("apache_acme_ca_root"))
    return HubClient(f"https://{address}:{ports.get('https') or s.https_port}{base}",
                     timeout=30, context=context)


def test_smoke_login_spawn_lab(host, hv, request):
    user = request.config.getoption("smoke")  # collected only with --smoke (conftest)
    pw_file = request.config.getoption("password_file")
    password = Path(pw_file).read_text().splitlines()[0] if pw_file else ""
    otp_file = request.config.getoption("otp_secret_file")
    otp = None
    if otp_file:
        from provision.otp import code

        otp = code(Path(otp_file).read_text().strip())
    client = hub_client_from_here(host, hv)
    client.smoke(user, password, otp)


@pytest.mark.only_if(lambda hv: hv["jupyterhub_request_otp"])
def test_one_time_passwords_are_checked_by_pam(host, hv):
    from roles import otp

    pam = host.file(otp.PAM_FILE)
    assert pam.exists and "pam_google_authenticator.so" in pam.content_string, (
        f"{otp.PAM_FILE} does not ask for the one-time password")
    module = host.run("dpkg -L libpam-google-authenticator | grep -c "
                      "'/pam_google_authenticator.so$'")
    assert module.stdout.strip() == "1", "pam_google_authenticator.so is not installed"
    config = host.file(jupyterhub.config_path(hv)).content_string
    assert "c.PAMAuthenticator.service = 'jupyterhub'" in config, (
        "the hub does not use its own PAM service: the code would not be checked")
    d = host.file(hv["jupyterhub_otp_dir"])
    assert (d.user, d.mode) == ("root", 0o700), f"{d.path}: {d.user} {d.mode:04o}"
    for u in hv["users"]:
        if u.get("otp_secret") and u.get("state", "present") == "present":
            f = host.file(otp.secret_file(hv, u["name"]))
            assert f.exists, f"{u['name']} has no one-time password secret on the host"
            assert (f.user, f.group) == ("root", "root") and f.mode in (0o600, 0o400), (
                f"{f.path}: {f.user}:{f.group} {f.mode:04o}, expected root:root 0600 or 0400")


@pytest.mark.only_if(lambda hv: hv["jupyterhub_request_otp"])
def test_the_clock_is_kept_in_sync_for_one_time_passwords(host, hv):
    synced = host.run("timedatectl show -p NTPSynchronized --value").stdout.strip()
    active = any(host.service(s).is_running for s in ("systemd-timesyncd", "chrony", "ntpsec",
                                                        "ntp"))
    if not active and synced != "yes":
        import warnings

        warnings.warn(f"{host.backend.hostname}: no time synchronisation is active: one-time "
                      "codes fail once the clock is 30 s off", stacklevel=1)


@pytest.mark.only_if(lambda hv: hv["jupyterhub_idle_timeout"] > 0)
def test_idle_culler_runs_under_the_hub(host, hv):
    venv = hv["jupyterhub_venv"]
    out = host.run(f"{venv}/bin/python -c \"import importlib.metadata as m; "
                   "print(m.version('jupyterhub-idle-culler'))\"")
    assert out.stdout.strip() == hv["jupyterhub_idle_culler_version"], (
        f"jupyterhub-idle-culler expected {hv['jupyterhub_idle_culler_version']} in {venv}, "
        f"found {out.stdout.strip() or out.stderr.strip()[-200:]}")
    hub_pid = int(host.run(f"systemctl show -p MainPID --value {jupyterhub.UNIT}").stdout)
    procs = host.run(f"pgrep -f -a -P {hub_pid} jupyterhub_idle_culler")
    assert procs.rc == 0, (f"no jupyterhub_idle_culler process under the hub (pid {hub_pid}): "
                           "is the idle-culler service in jupyterhub_config.py?")
    assert f"--timeout={hv['jupyterhub_idle_timeout']}" in procs.stdout, procs.stdout
