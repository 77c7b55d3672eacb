"""A bare Debian machine of the tests' own: debootstrap's minbase, in namespaces of its own.

Shaped by what the release check must prove, that the README's two commands work where nothing
they need is installed:
- The image is minbase (what Debian's container images hold) plus Python with `venv` and the CA
  certificates. Python is the one thing the commands may ask for (they name the package to
  install); RabbitMQ, Redis, Chromium and iproute2 they must install themselves. As in Debian's
  container images, packages do not start their services on install (`policy-rc.d`): the
  commands start what they need.
- debootstrap takes about a minute, so the image is built once a day into a cache and copied
  for each machine; every machine starts bare.
- Each machine has a network namespace of its own, so its RabbitMQ and Redis listen on its own
  loopback and never meet this machine's. Its way out is slirp4netns, user-mode NAT, which
  changes nothing in this machine's firewall; `--disable-host-loopback` keeps the machine from
  this machine's own services.
- Each command gets mount, UTS and PID namespaces of its own (its own /proc, /sys, /dev/shm and
  /run, hostname `bare-debian`). When the command ends, everything it started ends with it:
  RabbitMQ's Erlang VM, Redis, the stack.
- The machine trusts the CAs this machine adds to Debian's (/usr/local/share/ca-certificates):
  on a network that inspects TLS, pip would otherwise refuse PyPI.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.waiting import wait_for

#: PID 1 of a machine, as an init: it starts the command chrooted, with the signal dispositions a
#: login has, forwards SIGTERM and SIGINT to it, and reaps every orphan meanwhile. (With none,
#: a daemon's exited process stays a zombie, and `rabbitmqctl stop` waits for its pid to go;
#: a bash reaping in its place starts the command in the background, which ignores SIGINT.)
_INIT = """
import os, signal, sys
root, script, path = sys.argv[1:4]
child = os.fork()
if child == 0:
    for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)  # Python ignores the first two; a login does not
    os.chroot(root)
    os.chdir("/")
    os.execve("/bin/bash", ["/bin/bash", "-c", script],
              {"HOME": "/root", "PATH": path, "LANG": "C.UTF-8", "TERM": "dumb"})

def forward(number, frame):
    try:
        os.kill(child, number)
    except ProcessLookupError:
        pass

signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
while True:
    try:
        reaped, status = os.waitpid(-1, 0)
    except ChildProcessError:
        sys.exit(1)
    if reaped == child:
        code = os.waitstatus_to_exitcode(status)
        sys.exit(code if code >= 0 else 128 - code)
"""

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("python3", "python3-venv", "ca-certificates")
CACHE = Path("/var/tmp/ingest-bare-debian")
HOSTNAME = "bare-debian"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def available() -> str | None:
    """Why no bare machine can be made here, or None."""
    if os.geteuid() != 0:
        return "the bare-Debian check makes namespaces and a chroot: run it as root"
    missing = [tool for tool in ("debootstrap", "slirp4netns", "ip", "unshare", "git") if shutil.which(tool) is None]
    if missing:
        return f"the bare-Debian check needs {', '.join(missing)}: apt-get install debootstrap slirp4netns iproute2 git"
    return None


def base_image(cache: Path = CACHE) -> Path:
    """Today's image, built when missing (older days' images are removed)."""
    tag = hashlib.sha256(" ".join((SUITE, MIRROR, *INCLUDE)).encode()).hexdigest()[:8]
    image = cache / f"{SUITE}-{datetime.date.today():%Y%m%d}-{tag}"
    if image.is_dir():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"{SUITE}-*"):
        shutil.rmtree(old, ignore_errors=True)
    partial = cache / f".partial-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(partial),
                        MIRROR], check=True, capture_output=True, timeout=900)
        _configure(partial)
        partial.rename(image)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return image


def _configure(root: Path) -> None:
    """What a fresh install has beyond debootstrap's files: its updates, a name, a resolver."""
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb http://deb.debian.org/debian-security {SUITE}-security main\n")
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost\n")
    (root / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")  # slirp4netns's resolver
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# as in Debian's container images: packages do not start services\nexit 101\n")
    policy.chmod(0o755)
    for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy2(certificate, root / "usr/local/share/ca-certificates" / certificate.name)
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True, timeout=120,
                   env={"PATH": PATH})


class Machine:
    """A copy of the image in `workdir`, a network namespace and its way out."""

    def __init__(self, workdir: Path, image: Path):
        self.root = workdir / "root"
        subprocess.run(["cp", "-a", str(image), str(self.root)], check=True, timeout=600)
        self.netns = f"bare-{uuid.uuid4().hex[:6]}"
        self._slirp: subprocess.Popen | None = None
        self._running: list[subprocess.Popen] = []
        subprocess.run(["ip", "netns", "add", self.netns], check=True, timeout=30)
        try:
            subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
            self._slirp = subprocess.Popen(
                ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback", "--netns-type=path",
                 f"/run/netns/{self.netns}", "tap0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(self._online, timeout=30, interval=0.2, what="slirp4netns to give the machine its way out")
        except BaseException:
            self.remove()
            raise

    def _online(self) -> bool:
        shown = subprocess.run(["ip", "netns", "exec", self.netns, "ip", "-4", "addr", "show", "tap0"],
                               capture_output=True, text=True, timeout=10)
        return "inet " in shown.stdout

    def clone(self, repository: Path, where: str = "/root/ingest") -> str:
        """A clean checkout of `repository`'s HEAD inside the machine; its path there."""
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(repository), str(self.root / where.lstrip("/"))],
                       check=True, timeout=300)
        return where

    def _argv(self, script: str) -> list[str]:
        """Run `script` with bash, as root, in the machine: a login's environment and nothing of ours."""
        mounts = (
            # The root a mount of its own, as on a real machine: `ip netns exec` remounts it.
            'set -e; hostname "$1"; mount --bind "$2" "$2"; mount -t proc proc "$2/proc"; '
            'mount -t sysfs sysfs "$2/sys"; mount --rbind /dev "$2/dev"; '
            'mount -t tmpfs -o mode=1777 tmpfs "$2/dev/shm"; mount -t tmpfs tmpfs "$2/run"; '
            'shift 2; exec "$@"')
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
                "bash", "-c", mounts, "bare", HOSTNAME, str(self.root),
                sys.executable, "-c", _INIT, str(self.root), script, PATH]

    def run(self, script: str, log: Path, timeout: float) -> int:
        """Run `script` to its end (killed after `timeout` s); its exit status. Its output goes to `log`."""
        with log.open("ab") as out:
            process = subprocess.Popen(self._argv(script), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self._running.append(process)
        try:
            return process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                self._kill(process)
            self._running.remove(process)

    def start(self, script: str, log: Path) -> subprocess.Popen:
        """Start `script` and go on; `remove()` stops it and everything it started."""
        with log.open("ab") as out:
            process = subprocess.Popen(self._argv(script), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self._running.append(process)
        return process

    def http(self, method: str, url: str, body: dict | None = None) -> tuple[int, str]:
        """One request from inside the machine's network (only there is its loopback); (status, body), or
        (0, why) when nothing answers."""
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]\n"
            "data = body.encode() if body else None\n"
            "request = urllib.request.Request(url, data=data, method=method,"
            " headers={'Content-Type': 'application/json'})\n"
            "try:\n"
            "    with urllib.request.urlopen(request, timeout=10) as answer:\n"
            "        print(json.dumps([answer.status, answer.read().decode()]))\n"
            "except urllib.error.HTTPError as refused:\n"
            "    print(json.dumps([refused.code, refused.read().decode()]))\n"
            "except OSError as error:\n"
            "    print(json.dumps([0, str(error)]))\n")
        done = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code, method, url,
                               json.dumps(body) if body is not None else ""],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return 0, done.stderr.strip()
        status, text = json.loads(done.stdout)
        return status, text

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        """The whole command: unshare's --kill-child ends its PID namespace, and with it every process."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def remove(self) -> None:
        for process in list(self._running):
            self._kill(process)
        if self._slirp is not None:
            self._slirp.kill()
            self._slirp.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
