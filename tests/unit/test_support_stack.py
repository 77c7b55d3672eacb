"""tests/support/stack.py: stopping a process group leaves nothing of it running."""

from __future__ import annotations

import signal
import subprocess

from tests.support.processes import descendants
from tests.support.stack import stop_tree
from tests.support.waiting import wait_for


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sigkilled_entrypoint_takes_its_children_in_their_own_session_with_it():
    # As entrypoint_dramatiq.sh does: the workers in a session of their own, the script waiting.
    entrypoint = subprocess.Popen(["bash", "-c", "setsid sleep 300 & wait"])
    wait_for(lambda: descendants(entrypoint.pid) or None, timeout=10, what="the child to start")
    (child,) = descendants(entrypoint.pid)
    stop_tree(entrypoint, signal.SIGKILL, 10)
    wait_for(lambda: not alive(child), timeout=10, what=f"the child {child} to be gone")
