"""One-time passwords that are really checked (pam_google_authenticator), on lab hosts:
enrolment with `add-user --otp`, logins with right, wrong, missing and reused codes, a
second host with the same secret, SSH and sudo untouched, the secret never shown."""

from __future__ import annotations

import json
import time

import pytest
from e2e_support import invoke, make_inventory, provision_json, sh

from provision.hubclient import HubClient, HubError
from provision.otp import code

pytestmark = pytest.mark.e2e
PW = "olivia-otp-pw-31"


def hub(lab_hosts, name: str) -> HubClient:
    port = next(h.ports["hub"] for h in lab_hosts if h.name == name)
    return HubClient(f"http://127.0.0.1:{port}/", timeout=30)


def next_window() -> None:
    """31 s: a code of a later step (never used), and a fresh budget of RATE_LIMIT 3 30,
    which counts every attempt of the last 30 s."""
    time.sleep(31)


@pytest.fixture(scope="module")
def otp_lab(lab_hosts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("otp")
    inv = make_inventory(tmp / "inv", {"jupyterhub_request_otp": True,
                                       "jupyterhub_otp_prompt": "Google Authenticator:"})
    pw = tmp / "pw"
    pw.write_text(PW + "\n")
    secret_file = tmp / "olivia.otp"
    enrol = invoke("add-user", "olivia", "--admin", "--uid", "2600", "--password-file", str(pw),
                   "--otp", "--otp-secret-file", str(secret_file), "--hosts", "lab1",
                   "--inventory", str(inv), check=True)
    secret = secret_file.read_text().strip()
    yield inv, secret, tmp, [enrol.stdout, enrol.stderr]
    provision_json(make_inventory(tmp / "plain"), "lab1,lab2", tmp)  # plain logins again


def refused(client: HubClient, password: str, otp: str | None) -> bool:
    try:
        client.login("olivia", password, otp)
    except HubError:
        return True
    return False


def test_the_right_password_and_code_log_in_and_run_a_kernel(otp_lab, lab_hosts):
    from test_behind_apache import Client

    inv, secret, tmp, _ = otp_lab
    port = next(h.ports["hub"] for h in lab_hosts if h.name == "lab1")
    client = Client(f"http://127.0.0.1:{port}/")
    now = code(secret)
    client.login("olivia", PW, now)
    client.start_server("olivia")
    client.open_lab("olivia")  # sets the server's _xsrf cookie, as a browser would
    kernel = client.start_kernel("olivia")
    assert client.execute("olivia", kernel, "1+1") == "2"
    client.stop_server("olivia")
    # the same code again: refused (DISALLOW_REUSE), then a wrong one
    assert refused(hub(lab_hosts, "lab1"), PW, now)
    wrong = next(c for c in ("000000", "111111", "222222")
                 if c not in {code(secret, time.time() + d) for d in (-30, 0, 30)})
    assert refused(hub(lab_hosts, "lab1"), PW, wrong)
    next_window()
    assert refused(hub(lab_hosts, "lab1"), PW, "")  # no code at all
    assert refused(hub(lab_hosts, "lab1"), "wrong password", code(secret))  # code unused
    hub(lab_hosts, "lab1").login("olivia", PW, code(secret))  # that code was not burnt


def test_ssh_and_sudo_do_not_ask_for_a_code(otp_lab):
    assert sh("lab1", "id -un").strip() == "root"
    out = sh("lab1", f"runuser -u olivia -- sh -c \"printf '%s\\\\n' '{PW}' | sudo -S -k -p '' "
                     "id -un\"")
    assert out.strip() == "root"


def test_a_second_host_gets_the_same_secret_and_takes_the_same_code(otp_lab, lab_hosts):
    inv, secret, tmp, _ = otp_lab
    next_window()
    provision_json(inv, "lab2", tmp)
    now = code(secret)
    hub(lab_hosts, "lab1").login("olivia", PW, now)
    hub(lab_hosts, "lab2").login("olivia", PW, now)  # one authenticator entry for the lab


def test_second_run_changes_nothing_and_the_secret_never_shows(otp_lab):
    inv, secret, tmp, outputs = otp_lab
    proc, report = provision_json(inv, "lab1,lab2", tmp)
    for name in ("lab1", "lab2"):
        assert report["hosts"][name]["changed"] == 0, [
            s["name"] for s in report["hosts"][name]["steps"] if s["status"] != "ok"]
    outputs += [proc.stdout, proc.stderr, json.dumps(report)]
    proc, report = provision_json(inv, "lab1", tmp, "--check", "--diff", "--verbose", "--var",
                                  "jupyterhub_otp_nullok=true")
    outputs += [proc.stdout, proc.stderr, json.dumps(report)]
    assert "nullok" in proc.stdout  # the diff is there...
    outputs.append(sh("lab1", "journalctl --no-pager -n 3000"))
    assert secret not in "\n".join(outputs)  # ...the secret is not
    stat = sh("lab1", "stat -c '%U:%G %a' /var/lib/jupyterhub-otp /var/lib/jupyterhub-otp/olivia")
    assert stat.split()[:3] == ["root:root", "700", "root:root"]
    assert stat.split()[3] in ("600", "400")  # PAM writes it back 0400 after a login
    assert "otp" not in sh("lab1", "ls -a /home/olivia")
    next_window()  # verify logs in with the current code: one not used yet
    verify = invoke("verify", "--hosts", "lab1", "--inventory", str(inv), "--smoke", "olivia",
                    "--password-file", str(tmp / "pw"), "--otp-secret-file",
                    str(tmp / "olivia.otp"))
    assert verify.returncode == 0, verify.stdout[-3000:]


def test_otp_turned_off_takes_its_pam_service_away_and_on_again_keeps_the_secret(
        otp_lab, lab_hosts):
    import hashlib

    inv, secret, tmp, _ = otp_lab
    off = ("--var", "jupyterhub_request_otp=false")
    first_line = "head -n 1 /var/lib/jupyterhub-otp/olivia | tr -d '\\n' | sha256sum"
    want = hashlib.sha256(secret.encode()).hexdigest()
    assert sh("lab1", first_line).split()[0] == want
    provision_json(inv, "lab1", tmp, *off)
    assert sh("lab1", "test -e /etc/pam.d/jupyterhub || echo gone").strip() == "gone"
    config = sh("lab1", "cat /etc/jupyterhub/jupyterhub_config.py")
    assert "PAMAuthenticator.service" not in config and "request_otp" not in config
    hub(lab_hosts, "lab1").login("olivia", PW)  # the password alone, through 'login'
    _, report = provision_json(inv, "lab1", tmp, *off)
    assert report["hosts"]["lab1"]["changed"] == 0, [
        s["name"] for s in report["hosts"]["lab1"]["steps"] if s["status"] != "ok"]
    # a PAM file of the sysadmin's own (no header of ours) is never removed
    sh("lab1", "printf '# mine\\n@include common-auth\\n' > /etc/pam.d/jupyterhub")
    _, report = provision_json(inv, "lab1", tmp, *off)
    assert report["hosts"]["lab1"]["changed"] == 0
    assert sh("lab1", "cat /etc/pam.d/jupyterhub").startswith("# mine")
    sh("lab1", "rm -f /etc/pam.d/jupyterhub")
    # on again: the same secret, nobody enrols anew; the code is asked for again
    assert sh("lab1", first_line).split()[0] == want
    provision_json(inv, "lab1", tmp)
    assert sh("lab1", first_line).split()[0] == want
    next_window()
    assert refused(hub(lab_hosts, "lab1"), PW, "")
    hub(lab_hosts, "lab1").login("olivia", PW, code(secret))
