"""The verify suite's wiring: hosts come from testinfra's --hosts, expectations from the
project's inventory and role code (so the checks and the desired state cannot drift)."""

from __future__ import annotations

import pytest

from provision.config import load_run
from provision.facts import parse_collected


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jhprovision verify")
    group.addoption("--inventory", default=None, help="inventory (default: ./inventory)")
    group.addoption("--smoke", default=None, help="log in as USER, spawn, load JupyterLab")
    group.addoption("--password-file", default=None, help="password of the --smoke user")
    group.addoption("--otp-secret-file", default=None,
                    help="the --smoke user's one-time password secret (base32), if any")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "only_if(predicate): collected only for hosts whose "
                            "inventory variables satisfy predicate(vars)")
    if not config.getoption("hosts", None):
        raise pytest.UsageError(
            "name the hosts to verify (--hosts=ssh://lab1,...); testinfra would otherwise "
            "check the machine running the tests. Easiest: invoke verify --hosts lab1")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Deselect (not skip) what does not apply: the smoke test without --smoke USER,
    per-user checks when the inventory has no users, and checks marked
    ``only_if(predicate)`` on hosts whose variables do not satisfy it (e.g. Apache's checks
    where apache_enabled is false)."""
    def applies(item) -> bool:
        if "smoke" in item.name and not config.getoption("smoke"):
            return False
        marks = list(item.iter_markers("only_if"))
        if marks:
            hv = _item_vars(config, item)
            if hv is not None and not all(m.args[0](hv) for m in marks):
                return False
        mark = item.get_closest_marker("skip")
        return not (mark and "empty parameter set" in str(mark.kwargs.get("reason", "")))

    keep = [i for i in items if applies(i)]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def _item_vars(config: pytest.Config, item) -> dict | None:
    """The inventory variables of the host a test item runs against (testinfra's param)."""
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec else None
    if host is None:
        return None
    name = host.backend.host.name
    return next((h.vars for h in _run_config(config).hosts if h.name == name), None)


def _host_names(config: pytest.Config) -> list[str]:
    names = []
    for spec in config.getoption("hosts").split(","):
        name = spec.split("://", 1)[-1].split("@")[-1].split(":")[0].strip()
        if name:
            names.append(name)
    return names


def _run_config(config: pytest.Config):
    cached = getattr(config, "_jhprov_cfg", None)
    if cached is None:
        cached = load_run(config.getoption("inventory"), ",".join(_host_names(config)))
        config._jhprov_cfg = cached
    return cached


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize per user (testinfra parametrizes per host)."""
    if "username" in metafunc.fixturenames:
        cfg = _run_config(metafunc.config)
        names: list[str] = []
        for h in cfg.hosts:
            for u in h.vars.get("users") or []:
                if u["name"] not in names:
                    names.append(u["name"])
        metafunc.parametrize("username", names)


@pytest.fixture(scope="module")
def hv(host, request) -> dict:
    """The inventory's merged variables for the host under test."""
    cfg = _run_config(request.config)
    name = host.backend.host.name
    for h in cfg.hosts:
        if h.name == name:
            return h.vars
    raise pytest.UsageError(f"{name} is not in the inventory")


@pytest.fixture(scope="module")
def hfacts(host):
    """The few host facts the roles' templates depend on (python version)."""
    py = host.run("python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'")
    return parse_collected({"python": py.stdout.strip()})


# ------------------------------------------------------------------ per-host summary
_RESULTS: dict[str, list[tuple[str, str, str]]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    host = getattr(getattr(item, "callspec", None), "params", {}).get("_testinfra_host")
    name = host.backend.host.name if host is not None else "(all)"
    check = item.name.split("[", 1)[0].removeprefix("test_")
    params = item.name.split("[", 1)[1].rstrip("]") if "[" in item.name else ""
    detail = params.split("-", 1)[1] if "-" in params else ""
    why = ""
    if report.failed:
        text = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message
                   or report.longrepr)
        why = text.splitlines()[0].removeprefix("AssertionError: ")
    _RESULTS.setdefault(name, []).append((f"{check} {detail}".strip(), report.outcome, why))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("verify: per host")
    for host, rows in sorted(_RESULTS.items()):
        bad = [r for r in rows if r[1] == "failed"]
        status = f"{len(bad)} FAILED" if bad else "ok"
        tr.write_line(f"{host}: {len(rows) - len(bad)} checks passed, {status}")
        for check, _, why in bad:
            tr.write_line(f"  FAILED {check}: {why}")
