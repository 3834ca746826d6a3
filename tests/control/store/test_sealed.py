"""SealedStore: chosen kinds are sealed in the store underneath and plain to its users."""

from __future__ import annotations

import os

import pytest

from fngate.control import records
from fngate.control.secrets_box import SecretBox, SecretsKeyError
from fngate.control.store.base import Put
from fngate.control.store.memory import MemoryStore
from fngate.control.store.sealed import SealedStore


@pytest.fixture
def stores():
    inner = MemoryStore()
    return inner, SealedStore(inner, SecretBox(os.urandom(32)), records.SEALED_KINDS)


async def test_sealed_kinds_are_ciphertext_underneath_and_plain_through_get_list_watch(stores):
    inner, sealed = stores
    await sealed.commit([Put(records.SECRETS, "f/v", {"secrets": {"K": "value-123"}}), Put(records.FUNCTIONS, "f/v", {"id": "f"})])
    raw = await inner.get(records.SECRETS, "f/v")
    assert set(raw.value) == {"sealed"} and "value-123" not in str(raw.value)
    assert (await inner.get(records.FUNCTIONS, "f/v")).value == {"id": "f"}  # other kinds pass through
    assert (await sealed.get(records.SECRETS, "f/v")).value == {"secrets": {"K": "value-123"}}
    assert [r.value for r in await sealed.list(records.SECRETS)] == [{"secrets": {"K": "value-123"}}]
    watch = sealed.watch(0)
    change = await anext(watch)
    await watch.aclose()
    assert change.kind == records.SECRETS and change.value == {"secrets": {"K": "value-123"}}


async def test_a_sealed_value_moved_to_another_record_or_opened_with_another_key_fails(stores):
    inner, sealed = stores
    await sealed.put(records.SECRETS, "f/v1", {"secrets": {"K": "v"}})
    moved = (await inner.get(records.SECRETS, "f/v1")).value
    await inner.put(records.SECRETS, "f/v2", moved)
    with pytest.raises(SecretsKeyError, match="cannot decrypt"):
        await sealed.get(records.SECRETS, "f/v2")
    other = SealedStore(inner, SecretBox(os.urandom(32)), records.SEALED_KINDS)
    with pytest.raises(SecretsKeyError, match="cannot decrypt"):
        await other.get(records.SECRETS, "f/v1")


async def test_seal_plaintext_rewrites_what_an_older_release_stored_in_the_clear(stores):
    inner, sealed = stores
    await inner.put(records.SECRETS, "f/v", {"secrets": {"K": "old-plain"}})
    assert await sealed.seal_plaintext() == 1
    assert "old-plain" not in str((await inner.get(records.SECRETS, "f/v")).value)
    assert (await sealed.get(records.SECRETS, "f/v")).value == {"secrets": {"K": "old-plain"}}
    assert await sealed.seal_plaintext() == 0


def test_key_from_environment_or_a_0600_file(tmp_path):
    import base64
    import stat

    box = SecretBox.load(tmp_path / "d", env={})
    key_file = tmp_path / "d" / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    again = SecretBox.load(tmp_path / "d", env={})
    assert again.open(box.seal({"a": 1}, "x"), "x") == {"a": 1}  # the same key on the next start
    env_key = base64.b64encode(os.urandom(32)).decode()
    from_env = SecretBox.load(tmp_path / "e", env={"FNGATE_SECRETS_KEY": env_key})
    assert not (tmp_path / "e" / "secrets.key").exists()
    assert SecretBox.load(tmp_path / "f", env={"FNGATE_SECRETS_KEY": env_key}).open(from_env.seal({"b": 2}, "y"), "y") == {"b": 2}
    for bad in ("short", "!!!notbase64!!!"):
        with pytest.raises(SecretsKeyError):
            SecretBox.load(tmp_path / "g", env={"FNGATE_SECRETS_KEY": bad})
