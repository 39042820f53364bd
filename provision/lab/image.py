"""The base image: a plain Debian 12 server tree shared read-only by every lab host.

Built once with `debootstrap --variant=minbase`, configured (see `configure_tree`), and
cached as a tarball in /var/cache/jhprovision-lab/base-KEY.tar.zst, where KEY hashes
the package list, the setup version and the files copied from this machine. The
unpacked tree in /var/lib/jhprovision-lab/base/KEY is each host's overlayfs lowerdir;
it is never written to after it is renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

from provision.lab import config, render
from provision.lab.errors import LabError
from provision.lab.system import mounts_under, run

log = logging.getLogger(__name__)

_TAR_OPTS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]

# What a lab host's sshd accepts. Only the ed25519 host key exists (generated per host
# before boot), so naming it keeps sshd from looking for the others.
SSHD_DROP_IN = """\
# Written by the jhprovision lab: root logs in with the lab's key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
"""

PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
NPMRC = "cafile=/etc/ssl/certs/ca-certificates.crt\n"
# systemd mounts nothing from an empty fstab; a root entry would fail to remount in the
# container and leave the system "degraded".
FSTAB = "# The root file system is set up by systemd-nspawn: no entries here.\n"
# Units that must not run in a lab host. The apt timers would take the dpkg lock in the
# middle of a provisioning run.
# user@.service: a per-user systemd for each SSH login costs inotify instances, which are
# counted per uid across all hosts of the machine (fs.inotify.max_user_instances, often
# 128): with a dozen hosts, logins start failing and systemd says "degraded".
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "user@.service")


def signed_by_keyrings(sources_text: str) -> list[Path]:
    """Keyring files named by `Signed-By:` in a deb822 sources file."""
    paths = []
    for line in sources_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "signed-by" and value.strip().startswith("/"):
            paths.append(Path(value.strip()))
    return sorted(set(paths))


def mirror_of(sources_text: str) -> str:
    """The Debian mirror (first `URIs:` ending in /debian) of a deb822 sources file."""
    for line in sources_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "uris":
            for uri in value.split():
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return config.DEFAULT_MIRROR


def host_files() -> list[Path]:
    """Files of this machine that go into the image (apt sources and keys, CA certs)."""
    files: list[Path] = []
    if config.HOST_SOURCES.is_file():
        files.append(config.HOST_SOURCES)
        files += signed_by_keyrings(config.HOST_SOURCES.read_text())
    files += [path for path in config.HOST_APT_CONF if path.is_file()]
    if config.HOST_CA_DIR.is_dir():
        files += sorted(p for p in config.HOST_CA_DIR.rglob("*") if p.is_file())
    return files


def mirror() -> str:
    if config.HOST_SOURCES.is_file():
        return mirror_of(config.HOST_SOURCES.read_text())
    return config.DEFAULT_MIRROR


def check_suite(suite: str) -> str:
    if suite not in config.SUITES:
        raise LabError(f"--suite {suite!r}: the lab boots {', '.join(config.SUITES)}")
    return suite


def sources_for(text: str, suite: str) -> str:
    """This machine's apt sources (its mirror, its snapshot) for a host of `suite`:
    bookworm, bookworm-updates and bookworm-security become the suite's own."""
    return re.sub(rf"\b{re.escape(config.SUITE)}\b", suite, text)


def current_key(suite: str = config.SUITE) -> str:
    """Cache key of the image of `suite` this machine would build now."""
    digests = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in host_files()}
    return render.cache_key(config.PACKAGES, suite, mirror(), config.SETUP_VERSION, digests)


def tarball_path(key: str) -> Path:
    return config.CACHE_DIR / f"base-{key}.tar.zst"


def ensure_base(suite: str = config.SUITE) -> Path:
    """Return the unpacked base tree of `suite`, unpacking or building it first if needed."""
    key = current_key(check_suite(suite))
    tree = config.BASE_DIR / key
    if tree.is_dir():
        return tree
    config.BASE_DIR.mkdir(parents=True, exist_ok=True)
    with open(config.BASE_DIR / f".lock-{key}", "w") as lock:
        # Another lab.up (a test session beside this one) may be making the same image:
        # wait for it rather than build it twice in the same place.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tree.is_dir():
            return tree
        return _make_base(key, tree, suite)


def _make_base(key: str, tree: Path, suite: str) -> Path:
    tarball = tarball_path(key)
    if not tarball.is_file():
        build(key, tarball, suite)  # leaves the built tree in place, too
        return tree
    log.info("unpacking base image %s", tarball)
    tmp = config.BASE_DIR / f".unpack-{key}"
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    run(["tar", *_TAR_OPTS, "--zstd", "-C", tmp, "-xf", tarball], timeout=600)
    # The rename makes the tree appear complete or not at all.
    os.rename(tmp, tree)
    return tree


def build(key: str, tarball: Path, suite: str = config.SUITE) -> None:
    """debootstrap `suite` + configure a tree, then store it as `tarball` (atomically)."""
    tmp = config.BASE_DIR / f".build-{key}"
    _remove_tree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("building the %s base image with debootstrap (once per machine, about 1-2 min)",
             suite)
    try:
        run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(config.PACKAGES)}",
                suite, tmp, mirror(),
            ],
            timeout=1800,
        )  # fmt: skip
    except LabError as err:
        detail = _tail(tmp / "debootstrap" / "debootstrap.log")
        raise LabError(f"{err}\n--- debootstrap.log (end) ---\n{detail}") from err
    log.info("debootstrap took %.0fs", time.monotonic() - started)
    configure_tree(tmp, suite)
    config.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial")
    run(["tar", *_TAR_OPTS, "--zstd", "-C", tmp, "-cf", partial, "."], timeout=600)
    os.replace(partial, tarball)
    # The built tree is exactly what the tarball holds: use it instead of unpacking.
    os.rename(tmp, config.BASE_DIR / key)
    log.info("base image %s ready in %.0fs", key, time.monotonic() - started)
    prune(keep={current_key(s) for s in config.SUITES})


# Tarballs kept besides the current one, so switching between branches whose images
# differ does not rebuild each time.
KEEP_OLD_TARBALLS = 2


def prune(keep: set[str]) -> None:
    """Remove base trees no overlay uses any more, and all but the newest old tarballs;
    the current tree and tarball of every suite in `keep` stay."""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for tree in config.BASE_DIR.iterdir():
        if tree.name not in keep and not tree.name.startswith(".") and tree.is_dir():
            if f"lowerdir={tree}," not in mountinfo and f"lowerdir={tree} " not in mountinfo:
                log.info("removing unused base tree %s", tree)
                _remove_tree(tree)
    old = sorted(
        (p for p in config.CACHE_DIR.glob("base-*.tar.zst")
         if p not in {tarball_path(k) for k in keep}),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for tarball in old[KEEP_OLD_TARBALLS:]:
        log.info("removing old base image %s", tarball)
        tarball.unlink()


def configure_tree(tree: Path, suite: str = config.SUITE) -> None:
    """Turn a fresh debootstrap tree into the lab's base (once, shared by all hosts).

    Per-host identity (hostname, machine-id, host key, authorized_keys) is not here: it
    is written into each host's overlay upper dir by `host.py`.
    """
    etc = tree / "etc"
    # Same mirror and keys as this machine (its mirror is a dated snapshot: hence the
    # Acquire::Check-Valid-Until setting copied with it).
    if config.HOST_SOURCES.is_file():
        (etc / "apt" / "sources.list").unlink(missing_ok=True)
        _copy_in(tree, config.HOST_SOURCES)
        target = tree / config.HOST_SOURCES.relative_to("/")
        target.write_text(sources_for(target.read_text(), suite))
        for keyring in signed_by_keyrings(config.HOST_SOURCES.read_text()):
            _copy_in(tree, keyring)
    for conf in config.HOST_APT_CONF:
        if conf.is_file():
            _copy_in(tree, conf)
    # Debootstrap's package lists describe its own sources.list: drop them with the debs.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (tree / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    # TLS egress goes through this machine's proxy: trust the same CAs, system-wide and
    # for pip and npm (they do not read the system store by default).
    if config.HOST_CA_DIR.is_dir():
        shutil.copytree(
            config.HOST_CA_DIR, tree / config.HOST_CA_DIR.relative_to("/"), dirs_exist_ok=True
        )
        run(["chroot", tree, "update-ca-certificates"], timeout=120)
    (etc / "pip.conf").write_text(PIP_CONF)
    (etc / "npmrc").write_text(NPMRC)
    (etc / "fstab").write_text(FSTAB)
    for unit in MASKED_UNITS:
        link = etc / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # Identity: every host gets its own machine-id and host key; none may be shared.
    (etc / "machine-id").write_text("")
    (tree / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "ssh" / "sshd_config.d" / "lab.conf").write_text(SSHD_DROP_IN)
    (etc / "hostname").write_text("localhost\n")
    # pam_env reads it at every SSH login and logs a warning when it is missing.
    (etc / "default" / "locale").write_text("LANG=C.UTF-8\n")
    # slirp4netns answers DNS on 10.0.2.3; nspawn runs with --resolv-conf=off.
    resolv = etc / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(f"nameserver {config.GUEST_DNS}\n")


def _copy_in(tree: Path, source: Path) -> None:
    """Copy `source` to the same absolute path inside `tree`."""
    target = tree / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _remove_tree(path: Path) -> None:
    if mounts_under(path):
        raise LabError(f"{path} has something mounted in it; unmount it before retrying")
    if path.exists():
        shutil.rmtree(path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
