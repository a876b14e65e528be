"""The key format: pure functions."""

import pytest

from keyhouse import keys


def test_generated_keys_are_well_formed_and_distinct():
    generated = {keys.generate() for _ in range(200)}
    assert len(generated) == 200
    for key in generated:
        assert key.startswith("kh_") and len(key) == len("kh_") + keys.TAIL_LENGTH
        assert keys.is_well_formed(key)


@pytest.mark.parametrize("mutate", [
    lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),          # checksum digit changed
    lambda k: k[:10] + ("x" if k[10] != "x" else "y") + k[11:],  # body changed, checksum kept
    lambda k: "kx_" + k[3:],                                     # wrong prefix
    lambda k: k[:-1],                                            # too short
    lambda k: k + "0",                                           # too long
    lambda k: k[:5] + "é" + k[6:],                               # not base62
    lambda k: "",
])
def test_garbage_is_refused_by_the_checksum_alone(mutate):
    assert not keys.is_well_formed(mutate(keys.generate()))


def test_hash_is_keyed_and_deterministic():
    key = keys.generate()
    assert keys.hash_key(b"one", key) == keys.hash_key(b"one", key)
    assert keys.hash_key(b"one", key) != keys.hash_key(b"two", key)
    assert key not in keys.hash_key(b"one", key)


def test_mask_shows_only_the_ends():
    key = keys.generate()
    masked = keys.mask(key)
    assert masked.startswith(key[:7]) and masked.endswith(key[-4:])
    assert len(masked.replace("…", "")) == 11


def test_new_key_carries_hash_and_hint_but_they_do_not_reveal_it():
    new = keys.new(b"secret")
    assert keys.is_well_formed(new.plaintext)
    assert new.hash == keys.hash_key(b"secret", new.plaintext)
    assert new.hint == keys.mask(new.plaintext)


def test_a_deployments_own_prefix_makes_keys_of_the_same_shape_and_checksum():
    key = keys.generate("acme_live_")
    assert key.startswith("acme_live_") and len(key) == len("acme_live_") + keys.TAIL_LENGTH
    assert keys.is_well_formed(key) and keys.is_well_formed(keys.generate())  # kh_ keys keep working
    assert not keys.is_well_formed("acme_test_" + key[len("acme_live_"):])  # the checksum covers the prefix
    assert keys.mask(key) == f"{key[:len('acme_live_') + 4]}…{key[-4:]}"


@pytest.mark.parametrize("prefix", ["Acme_", "acme", "_acme_", "9acme_", "acme-live_", "a" * 20 + "_", ""])
def test_a_prefix_of_another_shape_is_refused_at_start(prefix):
    """A lowercase letter, up to 18 lowercase letters, digits or underscores, and a final underscore: the
    final underscore is where a key's prefix ends (its base62 body has none)."""
    from pydantic import ValidationError

    from keyhouse.config import Settings

    with pytest.raises(ValidationError, match="key_prefix"):
        Settings(secret=b"s", key_prefix=prefix)
