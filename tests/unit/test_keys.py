"""API keys: the CLI, the file that keeps only hashes, and the ring that follows the file while the API runs."""

from __future__ import annotations

import os
import stat

import orjson
import pytest

from app import keys
from app.keys import KeyRing, add_key, main, revoke_key
from tests.support.waiting import wait_for


@pytest.fixture()
def keys_file(tmp_path, monkeypatch):
    path = tmp_path / "api-keys.json"
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    from config import get_settings

    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_add_prints_the_secret_as_its_last_line_and_the_file_keeps_only_a_hash(keys_file, capsys):
    assert main(["add", "cameras", "--scopes", "ingest,read", "--client-id", "acme", "--rate", "50"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert secret.startswith("ik_")
    stored = keys_file.read_text()
    assert secret not in stored and secret.split("_", 2)[2] not in stored
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    key = KeyRing(keys_file).find(secret)
    assert (key.name, key.scopes, key.client_ids, key.rate, key.tenant) == (
        "cameras", ("ingest", "read"), ("acme",), 50, "cameras")


def test_list_shows_names_scopes_and_bindings_but_never_a_secret_or_hash(keys_file, capsys):
    main(["add", "ops", "--scopes", "admin", "--tenant", "platform"])
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "ops\tscopes=admin\tclient_ids=*\trate=default\ttenant=platform" in listed
    digest = KeyRing(keys_file).find(secret).sha256
    assert secret not in listed and digest not in listed


def test_an_unknown_scope_or_a_second_key_of_the_same_name_is_refused_with_what_to_do(keys_file, capsys):
    assert main(["add", "x", "--scopes", "ingest,write"]) == 2
    assert "ingest, read, tasks, metrics, admin" in capsys.readouterr().err
    main(["add", "x", "--scopes", "read"])
    assert main(["add", "x", "--scopes", "read"]) == 2
    assert "revoke it first" in capsys.readouterr().err


def test_a_running_ring_refuses_a_revoked_key_within_seconds(tmp_path):
    path = tmp_path / "keys.json"
    secret = add_key(path, "temp", ["read"])
    kept = add_key(path, "kept", ["read"])
    ring = KeyRing(path)
    assert ring.find(secret) is not None
    assert revoke_key(path, "temp")
    wait_for(lambda: ring.find(secret) is None, timeout=keys.RELOAD_INTERVAL_SECONDS * 3, what="the revocation")
    assert ring.find(kept) is not None


def test_a_secret_is_hashed_once_until_the_keys_are_read_again_and_a_wrong_one_is_never_kept(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    secret = add_key(path, "cams", ["ingest"])
    ring = KeyRing(path)
    hashed = []
    real_hash = keys._hash
    monkeypatch.setattr(keys, "_hash", lambda text: hashed.append(text) or real_hash(text))
    assert ring.find(secret) is ring.find(secret) is not None
    assert len(hashed) == 1
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert ring.find(forged) is None and ring.find(forged) is None
    assert len(hashed) == 3 and forged not in ring._verified
    ring.refresh(force=True)  # the file did not change: what was verified stands
    assert ring.find(secret) is not None and len(hashed) == 3
    revoke_key(path, "cams")
    ring.refresh(force=True)
    assert ring.find(secret) is None


def test_a_secret_with_a_known_id_but_another_token_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    secret = add_key(path, "real", ["admin"])
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    ring = KeyRing(path)
    assert ring.find(forged) is None
    assert ring.find("Bearer " + secret) is None and ring.find("") is None


def test_without_a_keys_file_the_ring_is_open_and_once_one_appears_it_enforces(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "RELOAD_INTERVAL_SECONDS", 0.0)
    path = tmp_path / "keys.json"
    ring = KeyRing(path)
    assert not ring.enforcing
    secret = add_key(path, "first", ["ingest"])
    assert ring.find(secret) is not None and ring.enforcing


HAND_EDITS = {
    "not a list": lambda entry: {"keys": None},
    "entry not an object": lambda entry: {"keys": [1]},
    "name a number": lambda entry: {"keys": [{**entry, "name": 7}]},
    "rate a string": lambda entry: {"keys": [{**entry, "rate": "5"}]},
    "rate negative": lambda entry: {"keys": [{**entry, "rate": -1}]},
    "unknown scope": lambda entry: {"keys": [{**entry, "scopes": ["root"]}]},
}


@pytest.mark.parametrize("damage", ["garbage", "deleted", "empty", *HAND_EDITS])
def test_a_damaged_or_deleted_keys_file_refuses_every_key_and_never_opens_the_api(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(keys, "RELOAD_INTERVAL_SECONDS", 0.0)
    path = tmp_path / "keys.json"
    secret = add_key(path, "k", ["admin"])
    ring = KeyRing(path)
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "deleted":
        path.unlink()
    elif damage == "empty":
        path.write_text("")
    else:
        (entry,) = orjson.loads(path.read_bytes())["keys"]
        path.write_bytes(orjson.dumps(HAND_EDITS[damage](entry)))
    assert ring.find(secret) is None
    assert ring.enforcing


def test_a_keys_file_mended_after_damage_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "RELOAD_INTERVAL_SECONDS", 0.0)
    path = tmp_path / "keys.json"
    secret = add_key(path, "k", ["admin"])
    good = path.read_bytes()
    ring = KeyRing(path)
    path.write_text("{not json")
    assert ring.find(secret) is None
    path.write_bytes(good)
    assert ring.find(secret) is not None
