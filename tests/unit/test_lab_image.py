"""Unit tests of the base image's pure parts: reading this machine's apt sources."""

from __future__ import annotations

from pathlib import Path

from provision.lab import config, image

SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_signed_by_keyrings_are_listed_once() -> None:
    assert image.signed_by_keyrings(SOURCES) == [
        Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    ]


def test_mirror_is_the_debian_uri_not_security() -> None:
    assert image.mirror_of(SOURCES) == "http://deb.debian.org/debian"


def test_mirror_falls_back_to_the_default() -> None:
    assert image.mirror_of("Types: deb\nURIs: http://example.org/ubuntu\n") == (
        config.DEFAULT_MIRROR
    )


def test_image_is_a_plain_server() -> None:
    # The provisioner must install these itself: the lab must not hide a missing step.
    for package in ("python3-venv", "nodejs", "npm", "jupyterhub"):
        assert package not in config.PACKAGES
    for package in ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo"):
        assert package in config.PACKAGES


def test_sshd_drop_in_allows_root_by_key_only() -> None:
    lines = image.SSHD_DROP_IN.splitlines()
    assert "PermitRootLogin prohibit-password" in lines
    assert "PasswordAuthentication no" in lines
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in lines


def test_a_trixie_host_gets_this_machines_mirror_with_its_own_suites() -> None:
    out = image.sources_for(SOURCES, "trixie")
    assert "Suites: trixie trixie-updates" in out and "Suites: trixie-security" in out
    assert "bookworm" not in out
    assert "snapshot.debian.org/archive/debian/20250520T000000Z" in out
    assert image.sources_for(SOURCES, "bookworm") == SOURCES


def test_each_suite_has_a_base_of_its_own_and_unknown_ones_are_refused() -> None:
    import pytest

    assert image.current_key("bookworm") != image.current_key("trixie")
    with pytest.raises(image.LabError, match="--suite 'sid': the lab boots bookworm, trixie"):
        image.check_suite("sid")
