"""API keys: the file that holds them, the command that manages it, and the ring the API reads.

A secret is `ik_<id>_<token>`: `id` is public and finds the entry in one
dictionary look-up, `token` is 256 random bits. Only the SHA-256 of the whole
secret is stored, and it is compared with `hmac.compare_digest`. A slow
password hash (bcrypt, argon2) protects secrets people choose; these are
random and long, so a fast hash is as safe and costs the hot path ~1 us
instead of ~100 ms per request.

The file (API_KEYS_FILE, JSON, mode 600) is rewritten whole through a
temporary file and `os.replace`, so a reader never sees half of it. Every API
process checks its modification stamp at most once per RELOAD_INTERVAL_SECONDS
and reloads it when it changed: a revoked key stops working within seconds,
with no restart.

    python -m app.keys add NAME --scopes ingest,read [--client-id ID]... [--rate N] [--tenant T]
    python -m app.keys list
    python -m app.keys revoke NAME
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import orjson
from loguru import logger

#: What a key may do. `admin` includes every other scope.
SCOPES = ("ingest", "read", "tasks", "metrics", "admin")
RELOAD_INTERVAL_SECONDS = 1.0
#: Verified secrets a process remembers (one per key in use, in practice).
MAX_VERIFIED = 1024
_SECRET = re.compile(r"ik_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeyFileError(Exception):
    """The keys file cannot be read or does not say what it should; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    id: str
    sha256: str
    scopes: tuple[str, ...]
    #: The `client_id`s its payloads may carry; empty: any.
    client_ids: tuple[str, ...] = ()
    #: Requests per second; None: DEFAULT_RATE_PER_KEY; 0: unlimited.
    rate: int | None = None
    #: Keys of one tenant see each other's messages and share Idempotency-Keys; default: the name.
    tenant: str = ""
    created_at: str = ""

    @classmethod
    def from_json(cls, entry: object) -> "ApiKey":
        """One entry of the file, checked field by field: a hand-edited file must not become a 500."""
        if not isinstance(entry, dict):
            raise KeyFileError("each entry of 'keys' must be an object")
        try:
            key = cls(
                name=entry["name"], id=entry["id"], sha256=entry["sha256"], scopes=tuple(entry["scopes"]),
                client_ids=tuple(entry.get("client_ids", ())), rate=entry.get("rate"),
                tenant=entry.get("tenant") or entry["name"], created_at=str(entry.get("created_at", "")),
            )
        except (KeyError, TypeError) as error:
            raise KeyFileError(f"an entry lacks or mistypes {error}") from None
        texts = [key.name, key.id, key.sha256, key.tenant, *key.scopes, *key.client_ids]
        if not all(isinstance(text, str) for text in texts):
            raise KeyFileError(f"key {key.name!r}: names, ids, scopes and client ids are strings")
        if key.rate is not None and (not isinstance(key.rate, int) or isinstance(key.rate, bool) or key.rate < 0):
            raise KeyFileError(f"key {key.name!r}: rate is a whole number >= 0, or null")
        unknown = set(key.scopes) - set(SCOPES)
        if unknown:
            raise KeyFileError(f"key {key.name!r} has unknown scope(s) {sorted(unknown)}")
        return key


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def read_keys(path: Path) -> list[ApiKey]:
    """The keys in `path`; KeyFileError when it is not a keys file, FileNotFoundError when absent."""
    raw = path.read_bytes()
    try:
        document = orjson.loads(raw) if raw.strip() else {"keys": []}
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise KeyFileError(f"{path} is not a keys file (JSON with a 'keys' list)") from None
    return [ApiKey.from_json(entry) for entry in entries]


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    document = {"keys": [asdict(key) for key in keys]}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@contextmanager
def _locked(path: Path) -> Iterator[list[ApiKey]]:
    """The keys, under an exclusive lock, so two commands changing the file do not lose a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            keys = read_keys(path)
        except FileNotFoundError:
            keys = []
        yield keys


def add_key(path: Path, name: str, scopes: list[str], client_ids: list[str] = (), rate: int | None = None,
            tenant: str | None = None) -> str:
    """Create a key and return its secret: the only time it exists outside the client's hands."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a key name is 1-64 of A-Z a-z 0-9 . _ - (got {name!r})")
    if tenant is not None and not _NAME.fullmatch(tenant):
        raise ValueError(f"a tenant is 1-64 of A-Z a-z 0-9 . _ - (got {tenant!r})")
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(f"scopes are a comma-separated list of {', '.join(SCOPES)} (got {','.join(scopes)!r})")
    if rate is not None and rate < 0:
        raise ValueError("--rate is requests per second, 0 for unlimited")
    key_id = secrets.token_hex(6)
    secret = f"ik_{key_id}_{secrets.token_urlsafe(32)}"
    with _locked(path) as keys:
        if any(key.name == name for key in keys):
            raise ValueError(f"a key named {name!r} exists; revoke it first or choose another name")
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        keys.append(ApiKey(name, key_id, _hash(secret), tuple(dict.fromkeys(scopes)), tuple(client_ids), rate,
                           tenant or name, created))
        _write_keys(path, keys)
    return secret


def revoke_key(path: Path, name: str) -> bool:
    with _locked(path) as keys:
        kept = [key for key in keys if key.name != name]
        if len(kept) == len(keys):
            return False
        _write_keys(path, kept)
    return True


@dataclass
class KeyRing:
    """The keys of API_KEYS_FILE as this process last read them, re-read when the file changes.

    `enforcing` is False only while no keys file has ever been seen: then the
    API is open (and refuses to serve beyond loopback; see app.auth). Once a
    file has appeared, a deleted or unreadable one means no key is valid:
    failing closed, never open.
    """

    path: Path
    _by_id: dict[str, ApiKey] = field(default_factory=dict)
    #: Secrets that matched a key of `_by_id`: replaced with it, never outliving a key.
    _verified: dict[str, ApiKey] = field(default_factory=dict)
    _stamp: tuple | None = None
    _checked_at: float = -1e9
    enforcing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refresh(force=True)

    def find(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None (unknown, revoked, malformed).

        A secret verified once is remembered until the keys are read again (a change of the file,
        a revocation): the match and the digest were ~2% of the API's time a request. Only
        secrets that matched are kept, at most MAX_VERIFIED, so wrong ones cannot fill it.
        """
        self.refresh()
        verified = self._verified
        key = verified.get(secret)
        if key is not None:
            return key
        match = _SECRET.fullmatch(secret)
        if match is None:
            return None
        key = self._by_id.get(match.group(1))
        if key is None or not hmac.compare_digest(key.sha256, _hash(secret)):
            return None
        if len(verified) >= MAX_VERIFIED:
            verified.clear()
        verified[secret] = key
        return key

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_INTERVAL_SECONDS:
            return
        with self._lock:
            self._checked_at = now
            try:
                status = os.stat(self.path)
            except FileNotFoundError:
                if self.enforcing and self._by_id:
                    logger.error("keys file {} disappeared: every request is refused until it is back", self.path)
                self._by_id, self._verified, self._stamp = {}, {}, None
                return
            except OSError as error:  # e.g. a directory it is in became unreadable
                self._refuse_all(error)
                return
            # ctime too: a chmod that makes an unreadable file readable changes nothing else.
            stamp = (status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_size)
            if stamp == self._stamp:
                return
            self.enforcing = True
            try:
                keys = read_keys(self.path)
            except Exception as error:  # whatever is wrong with it, refuse; never open, never a 500
                self._refuse_all(error)
                return
            self._by_id, self._verified, self._stamp = {key.id: key for key in keys}, {}, stamp
            logger.info("loaded {} API key(s) from {}", len(keys), self.path)

    def _refuse_all(self, error: Exception) -> None:
        if self._by_id or self._stamp is not None or not self.enforcing:
            logger.error("keys file {} unreadable, every request is refused until it is fixed: {}", self.path, error)
        self.enforcing = True
        self._by_id, self._verified, self._stamp = {}, {}, None  # no stamp: read again at the next check


def _describe(key: ApiKey) -> str:
    clients = ",".join(key.client_ids) or "*"
    rate = "default" if key.rate is None else ("unlimited" if key.rate == 0 else f"{key.rate}/s")
    return (f"{key.name}\tscopes={','.join(key.scopes)}\tclient_ids={clients}\trate={rate}\ttenant={key.tenant}"
            f"\tcreated={key.created_at}")


def main(argv: list[str] | None = None) -> int:
    from config import get_settings

    parser = argparse.ArgumentParser(prog="python -m app.keys", description="Manage the API keys (API_KEYS_FILE).")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a key; its secret is printed once, as the last line")
    add.add_argument("name")
    add.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    add.add_argument("--client-id", action="append", default=[], dest="client_ids",
                     help="a client_id its payloads may carry (repeat for several); default: any")
    add.add_argument("--rate", type=int, default=None, help="requests per second (0: unlimited); "
                     "default: DEFAULT_RATE_PER_KEY")
    add.add_argument("--tenant", default=None, help="keys of one tenant see each other's messages; default: NAME")
    commands.add_parser("list", help="the keys, without secrets")
    revoke = commands.add_parser("revoke", help="delete a key; the API refuses it within seconds")
    revoke.add_argument("name")
    arguments = parser.parse_args(argv)
    path = get_settings().api_keys_file

    try:
        if arguments.command == "add":
            scopes = [scope.strip() for scope in arguments.scopes.split(",") if scope.strip()]
            secret = add_key(path, arguments.name, scopes, arguments.client_ids, arguments.rate, arguments.tenant)
            print(f"created key {arguments.name!r} in {path}; send it as 'Authorization: Bearer <key>'. "
                  "It is shown only now:")
            print(secret)
        elif arguments.command == "list":
            try:
                keys = read_keys(path)
            except FileNotFoundError:
                keys = []
            for key in keys:
                print(_describe(key))
            if not keys:
                print(f"no keys in {path}", file=sys.stderr)
        elif not revoke_key(path, arguments.name):
            print(f"no key named {arguments.name!r} in {path}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {arguments.name!r}; the API refuses it within {RELOAD_INTERVAL_SECONDS:g} s")
    except (ValueError, KeyFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
