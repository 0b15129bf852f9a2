"""Record what a terminal shows while a raypair command runs: the command in a detached tmux pane,
the pane's text captured every few seconds, a few captures kept (spread over the run, the last one
after the command ended) and written to a text file.

    python benchmarks/record_session.py --out docs/session_tune.txt -- raypair tune search_spaces/quickstart.yaml --storage /tmp/runs

Needs tmux. The command runs through tmux's shell as given (the arguments are quoted with shlex).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import uuid


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between captures")
    ap.add_argument("--keep", type=int, default=6, help="captures written (the last is always one)")
    ap.add_argument("--size", default="120x36")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        sys.exit("record_session: no command given")
    name, (w, h) = f"rec-{uuid.uuid4().hex[:8]}", args.size.split("x")
    done = f"{name}-done"
    line = f"{shlex.join(cmd)}; tmux wait-for -S {done}; sleep 600"  # the pane stays to be captured
    tmux("new-session", "-d", "-s", name, "-x", w, "-y", h, line)
    waiter = subprocess.Popen(["tmux", "wait-for", done])
    t0, shots = time.time(), []
    try:
        while True:
            ended = waiter.poll() is not None
            shots.append((time.time() - t0, tmux("capture-pane", "-p", "-t", name).rstrip()))
            if ended:
                break
            time.sleep(args.every)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        waiter.kill()
    shots = [s for i, s in enumerate(shots) if s[1] and (i == 0 or s[1] != shots[i - 1][1])] or shots[-1:]
    step = max(1, (len(shots) - 1) // max(1, args.keep - 1))
    kept = shots[:-1][::step][: args.keep - 1] + [shots[-1]]
    with open(args.out, "w") as f:
        f.write(f"A terminal session of `{shlex.join(cmd)}`, recorded in a {args.size} tmux pane: the pane's\n"
                f"text every {args.every:g} s; {len(kept)} of the {len(shots)} distinct captures are kept, the last one after\n"
                f"the command ended ({shots[-1][0]:.0f} s). Rerun: python benchmarks/record_session.py --out FILE -- COMMAND\n")
        for t, text in kept:
            f.write(f"\n===== screen at {t:.0f}s =====\n{text}\n")


if __name__ == "__main__":
    main()
