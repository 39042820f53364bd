"""Start one lab process detached from the caller, print its PID, and return at once.

Run as a script (`python launch.py --log FILE [--cgroup DIR]... -- ARGV...`); standard
library only, so it needs no import path. It forks; the child starts a new session,
moves itself into the given cgroups, sends its output to the log file, and execs ARGV.
The launcher exits right after, so the child's parent becomes PID 1, which reaps it when
it ends: `lab.down` never leaves a zombie slirp4netns or systemd-nspawn behind, even
when called from the long-lived process (a pytest session) that ran `lab.up`.
"""

from __future__ import annotations

import argparse
import os
import sys


def _child(args: argparse.Namespace, report: int) -> None:
    try:
        os.setsid()
        for cgroup in args.cgroup:
            os.makedirs(cgroup, exist_ok=True)
            # Writing 0 moves the writing process itself.
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
                handle.write("0")
        log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, report)
        os.closerange(report + 1, 1 << 16)
        os.execvp(args.argv[0], args.argv)
    except BaseException as err:  # report anything to the launcher, never return
        os.write(report, f"{type(err).__name__}: {err}".encode())
        os._exit(127)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args(argv)

    # The pipe is close-on-exec: EOF without data means the exec succeeded.
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(args, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        failure = pipe.read().decode(errors="replace")
    if failure:
        os.waitpid(pid, 0)
        print(f"cannot start {args.argv[0]}: {failure}", file=sys.stderr)
        return 1
    print(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
