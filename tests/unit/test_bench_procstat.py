"""bench/procstat: CPU per request counts what the processes did for the load, not their start-up."""

from __future__ import annotations

import subprocess
import sys

from bench.procstat import TreeSampler

_BURNER = """
import sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
burn(0.6)                      # its imports and start-up
print("ready", flush=True)
sys.stdin.readline()
burn(0.3)                      # the work
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_sampler_from_now_counts_only_the_cpu_used_after_it_began():
    child = subprocess.Popen([sys.executable, "-c", _BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        from_now, from_start = TreeSampler(child.pid, from_now=True), TreeSampler(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        for sampler in (from_now, from_start):
            sampler.sample()
    finally:
        child.stdin.write("end\n")
        child.stdin.close()
        child.wait(timeout=30)
    assert from_now.start_up_cpu_seconds >= 0.55
    assert 0.25 <= from_now.cpu_seconds <= 0.45
    assert from_start.cpu_seconds >= 0.85 and from_start.start_up_cpu_seconds == 0
