"""Worker "hosts" for tests: a network namespace each, joined to this machine by a veth pair.

The host side of the pair has an address of the test's own (from 10.231.0.0/16)
that a broker started by the test listens on; the namespace side is the host's
only way out. `partition()` sets the namespace's end down: packets stop both
ways, with no RST or FIN, as when a cable or a switch fails. The machine's end
only loses its carrier and keeps its route, so what the broker sends is dropped
without a word, whatever else routes the machine has (setting the machine's end
down instead took its route away: on a machine whose default route answers for
any address, as slirp4netns does in the bare-Debian check, the broker's packets
went there and came back refused), and only heartbeats tell the broker. Everything made here is removed by `remove()`; names carry a random
part, so two runs never meet.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid


def available() -> str | None:
    """Why no namespace can be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces of the tests' own need root"
    if shutil.which("ip") is None:
        return "ip not found: install iproute2 (./test.sh does)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"ip netns does not work here: {probe.stderr.strip()}"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class WorkerHost:
    """One namespace, its veth pair and a /30 of addresses: `address` on the machine, `own` inside."""

    def __init__(self, label: str):
        tag = uuid.uuid4().hex[:4]
        self.name = f"ingest-{label}-{tag}"
        self.outside, self.inside = f"v{label[:3]}{tag}o", f"v{label[:3]}{tag}i"  # at most 15 characters
        subnet = random.randrange(1, 16_000)
        base = (10 << 24) | (231 << 16) | (subnet << 2)
        self.address = _dotted(base + 1)  #: the machine's end: where the host reaches the broker
        self.own = _dotted(base + 2)
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            _ip("link", "set", self.inside, "netns", self.name)
            _ip("addr", "add", f"{self.address}/30", "dev", self.outside)
            _ip("link", "set", self.outside, "up")
            _ip("netns", "exec", self.name, "ip", "addr", "add", f"{self.own}/30", "dev", self.inside)
            _ip("netns", "exec", self.name, "ip", "link", "set", self.inside, "up")
            _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command on this host."""
        return ("ip", "netns", "exec", self.name)

    def partition(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.inside, "down")

    def heal(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.inside, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def _dotted(number: int) -> str:
    return ".".join(str((number >> shift) & 255) for shift in (24, 16, 8, 0))
