"""CPU seconds and peak RSS of a process tree, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.processes import descendants, peak_rss_mb

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_and_hwm(pid: int) -> tuple[float, float, float] | None:
    """(CPU seconds, peak RSS MB, of the CPU seconds those spent in the kernel)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        hwm = peak_rss_mb(pid)
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    user, kernel = int(fields[11]) / _TICKS, int(fields[12]) / _TICKS
    return user + kernel, hwm, kernel


class TreeSampler:
    """Remembers, per process of the tree, its latest CPU time and peak RSS (VmHWM).

    `from_now`: CPU is counted from this sampler's creation, not from each process's start. A
    process's import and start-up (about a second of CPU each for the API and the workers here)
    are not work done for requests: counted in, they were ~0.1 ms a request at 10,000 requests,
    the same for every version, which made every ratio of two versions look closer to 1 than it is.
    """

    def __init__(self, root: int, *, from_now: bool = False):
        self.root = root
        self.seen: dict[int, tuple[float, float, float]] = {}
        #: Per process, the (CPU, kernel) seconds it had used when counting began.
        self.base: dict[int, tuple[float, float]] = {}
        if from_now:
            self.sample()
            self.base = {pid: (cpu, kernel) for pid, (cpu, _, kernel) in self.seen.items()}

    def sample(self) -> None:
        for pid in [self.root, *descendants(self.root)]:
            reading = _cpu_and_hwm(pid)
            if reading is not None:
                self.seen[pid] = reading

    @property
    def cpu_seconds(self) -> float:
        return sum(cpu - self.base.get(pid, (0.0, 0.0))[0] for pid, (cpu, _, _) in self.seen.items())

    @property
    def kernel_seconds(self) -> float:
        """Of `cpu_seconds`, the time in system calls: sockets, fsync, futexes; no Python profile shows it."""
        return sum(kernel - self.base.get(pid, (0.0, 0.0))[1] for pid, (_, _, kernel) in self.seen.items())

    @property
    def start_up_cpu_seconds(self) -> float:
        """What the tree had used before counting began (its processes' imports and start-up)."""
        return sum(cpu for cpu, _ in self.base.values())

    @property
    def peak_rss_mb(self) -> float:
        """The largest single process of the tree (the targets are per process)."""
        return max((hwm for _, hwm, _ in self.seen.values()), default=0.0)


def rabbitmq_cpu_seconds() -> float | None:
    """CPU seconds used so far by the machine's RabbitMQ (its `beam.smp` processes), or None.

    RabbitMQ is shared: a run's figure is the difference over the run, and
    includes whatever else used the broker meanwhile (another vhost's load).
    """
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
        except OSError:
            continue
        reading = _cpu_and_hwm(int(entry.name))
        if reading is not None:
            total, found = total + reading[0], True
    return total if found else None


def per_request_ms(cpu_seconds: dict[str, float | None], requests: int) -> dict[str, float | None]:
    """CPU milliseconds per accepted request for each part, and for the API and workers together:
    on a shared machine a steadier figure than throughput, and the one the targets are set in."""
    each = {part: None if cpu is None else 1000 * cpu / max(requests, 1) for part, cpu in cpu_seconds.items()}
    each["api+workers"] = each["api"] + each["workers"]
    return each
