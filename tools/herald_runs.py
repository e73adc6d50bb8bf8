"""Running `herald bench` for the scripts of tools/: one command at a time, its output
kept in a log beside its JSON report, a clear error when it fails. Python 3 standard
library only."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

# One `herald bench` command may take this long before a script gives up on it: the
# largest the scripts run (a million pending deliveries, checkpointed and replayed)
# takes well under a minute on a 2-core machine.
COMMAND_TIMEOUT_S = 600


class Failure(Exception):
    """A run or a report that went wrong; the message says what and where to look."""


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise Failure(f"{path}: {e}")


def default_herald():
    """target/release/herald of the workspace this script sits in."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "target", "release", "herald")


def check_herald(herald):
    if not os.access(herald, os.X_OK):
        raise Failure(
            f"no herald binary at {herald}: build it with `cargo build --release -p herald-cli`, "
            "or give one with --herald"
        )


def fresh_out(out, prefix):
    """The directory for a run's reports: `out`, created if needed and holding no report
    yet, or a new one under the temporary directory."""
    out = out or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(out, exist_ok=True)
    if any(n.endswith(".json") for n in os.listdir(out)):
        raise Failure(f"{out} already holds reports: give an empty or new directory")
    return out


def run_one(herald, out, name, args, journal_dir, step, steps):
    """Runs `herald ARGS --json OUT/NAME --quiet` (its journal in a new directory under
    `journal_dir`, removed after, when one is given), keeps its output in OUT/NAME.log,
    and returns its report."""
    path = os.path.join(out, name)
    log = path[: -len(".json")] + ".log"
    argv = [herald] + list(args) + ["--json", path, "--quiet"]
    data = None
    if journal_dir is not None:
        data = tempfile.mkdtemp(prefix="herald-runs-", dir=journal_dir)
        argv += ["--data-dir", data]
    print(f"[{step}/{steps}] {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        with open(log, "w", encoding="utf-8") as f:
            try:
                done = subprocess.run(
                    argv, stdout=f, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                raise Failure(f"{name}: no result after {COMMAND_TIMEOUT_S} s; its output is in {log}")
            except OSError as e:
                raise Failure(f"cannot run {herald}: {e} (give the binary with --herald)")
    finally:
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
    if done.returncode != 0:
        raise Failure(f"{name}: herald exited with status {done.returncode}; its output is in {log}")
    return load(path)


def fmt(value, digits, unit=""):
    text = f"{value:,.0f}" if digits == 0 else f"{value:,.{digits}f}"
    return text + unit


def median(values):
    return statistics.median(values)
