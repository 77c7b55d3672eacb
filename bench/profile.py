"""Profile the API or the workers under a benchmark's load, and summarise where the time goes.

    .venv/bin/python -m bench.profile workers     # py-spy on the dramatiq workers while bench.sink drains
    .venv/bin/python -m bench.profile api         # py-spy on uvicorn during bench.run (10,000 requests)
    .venv/bin/python -m bench.profile summary FILE.raw   # the tables again, from a saved profile

py-spy samples only the thread holding the GIL (`--gil`), so the shares are
Python work, not threads waiting on a lock, a socket or the disk; it does not
pause the processes (`--nonblocking`). The raw profile (collapsed stacks, one
line per stack with its sample count; flamegraph tools read it) and a summary
of the top functions, by own time and including callees, go to
bench/profiles/.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import descendants  # noqa: E402

PROFILES = ROOT / "bench" / "profiles"
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def summarise(raw: Path, top: int = 25) -> str:
    """Own-time and inclusive shares of the top functions in a py-spy raw (collapsed) profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            if not frame.startswith(("process ", "Thread._bootstrap")):
                inclusive[frame] += samples
    lines = [f"{raw.name}: {total} samples (GIL held)", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def _wait_for_process(pattern: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "-o", pattern], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
        time.sleep(0.2)  # polling for a process to appear, bounded by `deadline`
    raise SystemExit(f"no process matching {pattern!r} appeared; did the benchmark start?")


def profile(kind: str, seconds: float) -> Path:
    py_spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is missing: run ./test.sh once (it installs requirements-dev.txt)")
    bench, pattern, ready = {
        "workers": (["-m", "bench.sink"], "logs dramatiq", "starting the workers"),
        "api": (["-m", "bench.run"], "uvicorn app.main", "[ours]"),
    }[kind]
    PROFILES.mkdir(exist_ok=True)
    raw = PROFILES / f"{kind}.raw"
    log = PROFILES / f"{kind}-bench.log"
    with open(log, "w") as out:
        runner = subprocess.Popen([PYTHON, *bench], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while ready not in log.read_text() and time.monotonic() < deadline:
                if runner.poll() is not None:
                    raise SystemExit(f"the benchmark ended early; see {log}")
                time.sleep(0.2)  # polling the benchmark's own output, bounded by `deadline`
            pid = _wait_for_process(pattern, deadline)
            time.sleep(1.0 if kind == "workers" else 3.0)  # past start-up, into the steady part
            # One py-spy per process: `--subprocesses` on dramatiq's parent sampled its forked
            # workers hardly at all (3 samples in 5 s), though each alone samples fine.
            pids = [pid, *descendants(pid)]
            parts = [raw.with_suffix(f".{each}.raw") for each in pids]
            recorders = [
                subprocess.Popen(
                    [py_spy, "record", "--pid", str(each), "--gil", "--nonblocking", "--rate", "100",
                     "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(part)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                for each, part in zip(pids, parts)
            ]
            for recorder in recorders:
                recorder.wait(timeout=seconds + 60)
            raw.write_text("".join(part.read_text() for part in parts if part.exists()))
            for part in parts:
                part.unlink(missing_ok=True)
        finally:
            runner.wait(timeout=600)
    summary = PROFILES / f"{kind}.txt"
    summary.write_text(summarise(raw))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["workers", "api", "summary"])
    parser.add_argument("file", nargs="?", help="for summary: a py-spy raw profile")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.what == "summary":
        if not args.file:
            parser.error("summary needs a raw profile file")
        sys.stdout.write(summarise(Path(args.file)))
        return
    summary = profile(args.what, args.seconds)
    sys.stdout.write(summary.read_text())
    print(f"wrote {summary} and {summary.with_suffix('.raw')}")


if __name__ == "__main__":
    main()
