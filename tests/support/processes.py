"""Find worker processes under the dramatiq CLI, and what a process has used, by reading /proc."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def peak_rss_mb(pid: int | str = "self") -> float:
    """The highest RSS of the process's own memory since its exec (VmHWM).

    Not `getrusage().ru_maxrss`: a child started by vfork and exec inherits its
    parent's peak there, so a small tool run from a big pytest process reads as big."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0) / 1024


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[0] == pid:
                found.append(int(entry.name))
    return found


def busiest_worker(supervisor_pid: int) -> int | None:
    """The child of the dramatiq CLI that has used the most CPU: a worker under load."""
    for cli in children(supervisor_pid):
        workers = [((_stat(pid) or (0, -1))[1], pid) for pid in children(cli)]
        if workers:
            return max(workers)[1]
    return None


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    found, frontier = [], [pid]
    while frontier:
        below = [child for parent in frontier for child in children(parent)]
        found.extend(below)
        frontier = below
    return found
