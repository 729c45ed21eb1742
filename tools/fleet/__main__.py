"""``python -m tools.fleet --sites 10`` (make fleet): the fleet check, a story and PASS or FAIL."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tools.fleet.check import run
from tools.fleet.stack import Fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10, help="site stacks to run (at least 2)")
    parser.add_argument("--plain", action="store_true", help="bridges over plain MQTT instead of TLS")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args(argv)
    if args.sites < 2:
        parser.error("--sites: at least 2 (one to command, one to cut)")
    # A SIGTERM (make interrupted, a CI timeout) unwinds through Fleet's stop: no process left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="qubit-fleet-"))
    began = time.monotonic()
    passed = False
    try:
        with Fleet(work, args.sites, tls=not args.plain) as fleet:
            story = run(fleet)
        passed = story.passed
        verdict = "PASS" if passed else "FAIL: " + "; ".join(story.failures)
        print(f"{verdict} ({args.sites} sites, {time.monotonic() - began:.0f} s)")
    finally:
        if passed and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and configs in {work}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
