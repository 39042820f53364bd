"""bench/class_login.py's pure parts: its arguments (--counts above all) and the nearest-rank
percentile it reports. Nothing here talks to a hub or a lab host."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.class_login import parse_args, parse_counts, percentile  # noqa: E402


def test_counts_are_read_in_order():
    assert parse_counts("1,15,45") == [1, 15, 45]
    assert parse_counts(" 3 , 1") == [3, 1]
    assert parse_counts("300") == [300]


@pytest.mark.parametrize("text", ["", "0", "-1", "1,,3", "1.5", "x", "15;45", "301", "²"])
def test_counts_that_are_not_positive_integers_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_counts(text)


def test_the_defaults():
    opts = parse_args([])
    assert (opts.host, opts.counts, opts.keep, opts.inventory) == ("lab1", [1, 15, 45], False,
                                                                   None)
    assert opts.password is None and opts.json_path is None


@pytest.mark.parametrize("argv", [["--counts", "0"], ["--counts", "1,a"], ["--counts", ""],
                                  ["--host", "jhub1"], ["--host", "lab0"],
                                  ["--inventory", "/nonexistent/inventory"],
                                  ["--json", "/nonexistent/dir/out.json"],
                                  ["--password-file", "/nonexistent/pw"]])
def test_bad_arguments_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_password_comes_from_the_first_line_of_the_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\nignored\n")
    assert parse_args(["--password-file", str(pw)]).password == "s3cret pass"


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile(values, 100) == 20.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 95) == 5.0


def test_one_value_is_its_own_p50_p95_and_max():
    assert percentile([12.5], 50) == percentile([12.5], 95) == percentile([12.5], 100) == 12.5


def test_no_values_have_no_percentile():
    assert percentile([], 50) is None


# --- CPU seconds per spawn ----------------------------------------------------------------

from bench.class_login import (  # noqa: E402
    cpu_line,
    cpu_per_spawn,
    parse_cpu_stat,
    parse_systemctl_cpu,
)

CPU_STAT_V2 = """usage_usec 81397305
user_usec 65323891
system_usec 16073414
nice_usec 0
core_sched.force_idle_usec 0
nr_periods 0
"""


def test_cpu_stat_is_read_field_by_field():
    fields = parse_cpu_stat(CPU_STAT_V2)
    assert fields["usage_usec"] == 81397305
    assert fields["user_usec"] + fields["system_usec"] == 81397305


def test_a_v1_cpu_stat_has_no_usage():
    assert "usage_usec" not in parse_cpu_stat("nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
    assert parse_cpu_stat("") == {}


SYSTEMCTL_SHOW = """Id=jupyterhub.service
CPUUsageNSec=2500000000

Id=configurable-http-proxy.service
CPUUsageNSec=[not set]

Id=jupyter-class01-singleuser.service
CPUUsageNSec=18446744073709551615

Id=jupyter-class02-singleuser.service
CPUUsageNSec=1999999
"""


def test_systemctl_cpu_usage_is_read_in_microseconds_unset_units_left_out():
    assert parse_systemctl_cpu(SYSTEMCTL_SHOW) == {"jupyterhub.service": 2_500_000,
                                                   "jupyter-class02-singleuser.service": 1999}
    assert parse_systemctl_cpu("") == {}


def sample(host, hub, proxy=None, servers=None, slirp=None):
    return {"host": host, "hub": hub, "proxy": proxy, "servers": servers or {},
            "slirp": slirp}


def test_cpu_per_spawn_divides_what_each_part_grew_by_n():
    before = sample(10_000_000, 1_000_000, 500_000, {}, 100_000)
    after = sample(19_000_000, 2_000_000, 800_000,
                   {"jupyter-a-singleuser.service": 2_500_000,
                    "jupyter-b-singleuser.service": 2_000_000,
                    "jupyter-c-singleuser.service": 1_500_000}, 1_600_000)
    cpu = cpu_per_spawn(before, after, 3, client_s=0.6)
    assert cpu == {"host": 3.0, "hub": 0.333, "proxy": 0.1, "servers": 2.0,
                   "other": 0.567, "slirp": 0.5, "client": 0.2}


def test_a_server_running_before_the_round_counts_what_it_grew_by():
    before = sample(0, 0, 0, {"jupyter-a-singleuser.service": 4_000_000})
    after = sample(8_000_000, 0, 0, {"jupyter-a-singleuser.service": 5_000_000,
                                     "jupyter-b-singleuser.service": 3_000_000})
    assert cpu_per_spawn(before, after, 2, 0.0)["servers"] == 2.0


def test_a_counter_that_went_down_is_a_new_unit_counted_whole():
    before = sample(0, 9_000_000)
    after = sample(4_000_000, 1_000_000)  # the hub restarted during the round
    assert cpu_per_spawn(before, after, 1, 0.0)["hub"] == 1.0


def test_parts_not_measured_are_none_and_printed_as_dashes():
    cpu = cpu_per_spawn(sample(None, None), sample(None, None), 5, client_s=1.0)
    assert cpu["host"] is cpu["hub"] is cpu["other"] is None
    assert cpu["servers"] == 0.0 and cpu["client"] == 0.2
    line = cpu_line(cpu)
    assert line.startswith("CPU s per spawn: host - = hub - + proxy - + servers 0.00")
    assert line.endswith("this client: client 0.20")
