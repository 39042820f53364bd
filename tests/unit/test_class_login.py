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
