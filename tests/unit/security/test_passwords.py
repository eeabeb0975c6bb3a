"""Prove the password hashing, verification and policy rules of bastion.security.passwords."""

from __future__ import annotations

import importlib.util
import random
import string
import sys
import threading
import unicodedata
from collections.abc import Iterator
from typing import Any, cast

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from bastion.security import passwords
from bastion.security.passwords import (
    OWASP_PARAMETERS,
    HashParameters,
    check_password_policy,
    configure,
    hash_password,
    needs_rehash,
    normalise,
    password_blocklist,
    verify_count,
    verify_password,
)

CHEAP = HashParameters(1, 8, 1)
# A 26-character passphrase that breaks no rule (checked in test_passphrase_passes_every_rule).
PASSPHRASE = "lantern orbit mossy quartz"
CONTEXT = ["Alice Smith", "alice.smith@example.com"]

TOO_CLOSE = "too close to your name, email or this site's name"
BLOCKLISTED = "commonly used password"
REPEATED_CHARACTER = "single repeated character"
REPEATED_PATTERN = "repeat a short pattern"
SEQUENCE = "simple sequences of letters, digits or keyboard keys"
# "123456789012345" in full-width digits: NFKC turns it into ASCII before the checks.
FULLWIDTH_DIGITS = "".join(chr(0xFF10 + int(digit)) for digit in "123456789012345")


@pytest.fixture(autouse=True)
def cheap_hasher() -> Iterator[None]:
    """Hash at cheap parameters during each test, then restore whatever was configured."""
    previous = passwords._state.parameters
    configure(CHEAP)
    yield
    configure(previous)


@pytest.fixture
def owasp_hasher() -> None:
    """Use the OWASP parameters (cheap_hasher restores the previous ones afterwards)."""
    configure(OWASP_PARAMETERS)


@pytest.fixture
def verify_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the hash every real argon2 verify is run against."""
    seen: list[str] = []
    original = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
        seen.append(hash.decode("ascii") if isinstance(hash, bytes) else hash)
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return seen


def params_of(stored_hash: str) -> tuple[int, int, int]:
    """Return (time_cost, memory_cost, parallelism) of an argon2 PHC string."""
    params = extract_parameters(stored_hash)
    return params.time_cost, params.memory_cost, params.parallelism


def policy(password: str, min_length: int = 15, context: list[str] | None = None) -> list[str]:
    """Run the policy with the usual test context."""
    words = CONTEXT if context is None else context
    return check_password_policy(password, min_length=min_length, context_words=words)


def has(problems: list[str], fragment: str) -> bool:
    """Return whether one of *problems* mentions *fragment*."""
    return any(fragment in problem for problem in problems)


def random_passphrase(length: int, seed: int) -> str:
    """Return a deterministic string of letters and spaces of exactly *length* characters."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(length))


# --- hashing -------------------------------------------------------------------------------


@pytest.mark.usefixtures("owasp_hasher")
def test_default_hash_is_argon2id_phc_at_owasp_minimum() -> None:
    assert HashParameters() == OWASP_PARAMETERS == HashParameters(2, 19456, 1)
    stored = hash_password(PASSPHRASE)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert (params.salt_len, params.hash_len) == (16, 32)
    assert verify_password(stored, PASSPHRASE)
    assert not needs_rehash(stored)


def test_module_default_is_owasp_before_any_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Load a fresh, never-configured copy of the module; the real one stays untouched.
    spec = importlib.util.spec_from_file_location("fresh_passwords", passwords.__file__)
    assert spec is not None
    assert spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fresh_passwords", fresh)
    spec.loader.exec_module(fresh)
    assert fresh._state.parameters == fresh.HashParameters(2, 19456, 1)
    assert fresh.hash_password("x").startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hashes_are_salted() -> None:
    assert hash_password(PASSPHRASE) != hash_password(PASSPHRASE)


def test_verify_accepts_the_password_and_rejects_others() -> None:
    stored = hash_password(PASSPHRASE)
    assert params_of(stored) == (1, 8, 1)
    assert verify_password(stored, PASSPHRASE) is True
    assert verify_password(stored, PASSPHRASE.upper()) is False
    assert verify_password(stored, "") is False


@pytest.mark.parametrize(
    ("stored_as", "typed_as"),
    [
        ("\ufb01le cabinet drawer", "file cabinet drawer"),  # "fi" ligature
        ("caf\u00e9 au lait please", "cafe\u0301 au lait please"),  # composed vs decomposed
        ("\uff30\uff41\uff53\uff53 phrase here", "Pass phrase here"),  # full-width letters
    ],
)
def test_verify_treats_nfkc_equivalents_as_equal(stored_as: str, typed_as: str) -> None:
    assert stored_as != typed_as
    assert normalise(stored_as) == normalise(typed_as)
    assert verify_password(hash_password(stored_as), typed_as)
    assert verify_password(hash_password(typed_as), stored_as)


def test_normalise_is_nfkc_and_nothing_else() -> None:
    raw = "  Caf\u0065\u0301 \ufb01 \t"
    assert normalise(raw) == unicodedata.normalize("NFKC", raw)
    assert normalise(raw).startswith("  ")
    assert normalise(raw).endswith(" \t")
    assert normalise("x" * 5000) == "x" * 5000


def test_surrounding_whitespace_is_significant() -> None:
    stored = hash_password(PASSPHRASE + " ")
    assert not verify_password(stored, PASSPHRASE)
    assert verify_password(stored, PASSPHRASE + " ")


def test_long_passwords_are_not_truncated() -> None:
    long_password = random_passphrase(199, seed=7) + "a"
    stored = hash_password(long_password)
    assert verify_password(stored, long_password)
    assert not verify_password(stored, long_password[:-1] + "b")
    assert not verify_password(stored, long_password[:72])  # bcrypt's cut-off
    assert not verify_password(stored, long_password[:-1])


# --- exactly one verify per login path -----------------------------------------------------


def test_valid_hash_costs_exactly_one_verify(verify_spy: list[str]) -> None:
    stored = hash_password(PASSPHRASE)
    before = verify_count()
    assert verify_password(stored, PASSPHRASE)
    assert verify_count() == before + 1
    assert not verify_password(stored, "not it at all")
    assert verify_count() == before + 2
    assert verify_spy == [stored, stored]


def test_unknown_user_still_costs_one_verify_at_current_parameters(
    verify_spy: list[str],
) -> None:
    before = verify_count()
    assert verify_password(None, PASSPHRASE) is False
    assert verify_count() == before + 1
    assert len(verify_spy) == 1
    assert params_of(verify_spy[0]) == (1, 8, 1)

    # After a parameter change the dummy hash follows: same cost as a real user's verify.
    configure(HashParameters(2, 16, 1))
    assert verify_password(None, PASSPHRASE) is False
    assert verify_count() == before + 2
    assert len(verify_spy) == 2
    assert params_of(verify_spy[1]) == (2, 16, 1)


def _malformed_hashes() -> list[str]:
    good = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSPHRASE)
    return [
        "",
        "not a hash",
        good.rpartition("$")[0],  # digest missing
        good.rpartition("$")[0] + "$",  # digest empty
        good + "\n",
        good.replace("$argon2id$", "$argon2i$"),  # right shape, type we never store
        good.replace("$v=19$", "$v=16$"),
        good.replace("m=8,", "m=4,"),  # below argon2's 8*p KiB minimum
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaGhhc2g",  # 4-byte salt
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2h=",  # padding
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2i",  # non-zero trailing bits
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "scrypt:32768:8:1$salt$" + "ab" * 64,  # werkzeug
        "\u0661" * 40,  # non-ASCII digits
    ]


@pytest.mark.parametrize("stored_hash", _malformed_hashes())
def test_malformed_hash_fails_after_one_dummy_verify(
    stored_hash: str, verify_spy: list[str]
) -> None:
    dummy = passwords._state.dummy_hash()
    before = verify_count()
    assert verify_password(stored_hash, PASSPHRASE) is False
    assert verify_count() == before + 1
    assert verify_spy == [dummy]
    assert params_of(dummy) == (1, 8, 1)


@pytest.mark.parametrize(
    ("stored_hash", "password"),
    [
        (12, PASSPHRASE),
        (b"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2g", PASSPHRASE),
        ("valid", None),
        ("valid", 12),
        ("valid", b"bytes"),
        ("valid", "\ud800 lone surrogate"),
    ],
)
def test_bad_inputs_never_raise_and_cost_one_verify(stored_hash: object, password: object) -> None:
    target = hash_password(PASSPHRASE) if stored_hash == "valid" else stored_hash
    before = verify_count()
    assert verify_password(cast(Any, target), cast(Any, password)) is False
    assert verify_count() == before + 1


def test_surrogates_hash_and_verify_consistently() -> None:
    odd = "\ud800 still a password"
    assert verify_password(hash_password(odd), odd)


def test_verify_count_is_thread_safe() -> None:
    before = verify_count()
    threads = [
        threading.Thread(target=lambda: [verify_password(None, "x") for _ in range(25)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verify_count() == before + 200


def test_needs_rehash_follows_configured_parameters() -> None:
    stored = hash_password(PASSPHRASE)
    assert needs_rehash(stored) is False
    configure(HashParameters(1, 16, 1))
    assert needs_rehash(stored) is True
    assert needs_rehash(hash_password(PASSPHRASE)) is False
    configure(OWASP_PARAMETERS)
    assert needs_rehash(stored) is True
    configure(CHEAP)
    assert needs_rehash(stored) is False


def test_needs_rehash_is_true_for_malformed_hashes() -> None:
    assert needs_rehash("not a hash") is True
    assert needs_rehash("") is True


def test_configure_rejects_parameters_argon2_cannot_use() -> None:
    with pytest.raises(ValueError, match="memory_cost"):
        configure(HashParameters(1, 7, 1))
    with pytest.raises(ValueError, match="time_cost"):
        configure(HashParameters(0, 8, 1))
    assert passwords._state.parameters == CHEAP


# --- password policy (NIST SP 800-63B-4) ---------------------------------------------------


def test_passphrase_passes_every_rule() -> None:
    assert len(PASSPHRASE) >= 15
    assert policy(PASSPHRASE) == []
    assert policy(PASSPHRASE, context=[]) == []


def test_minimum_length_is_enforced() -> None:
    assert policy("tangerine-kiwi") == ["Use at least 15 characters."]  # 14
    assert policy("tangerine-kiwis") == []  # 15
    assert policy("tangerine-kiwi", min_length=8) == []


def test_length_counts_code_points_after_nfkc() -> None:
    decomposed = "".join(vowel + "\u0301" for vowel in "aeiouyaeiou")  # 22 code points raw
    assert len(normalise(decomposed)) == 11
    assert has(policy(decomposed), "Use at least 15 characters.")
    japanese = "パスワードはとても長い"  # 11 code points, 33 UTF-8 bytes
    assert has(policy(japanese), "Use at least 15 characters.")
    assert policy("パスワードはとても長いですよね") == []  # 15 code points


@pytest.mark.parametrize("length", [64, 1024])
def test_long_passwords_are_allowed(length: int) -> None:
    assert policy(random_passphrase(length, seed=length)) == []


def test_passwords_over_1024_characters_are_refused() -> None:
    problems = policy(random_passphrase(1025, seed=1))
    assert problems == ["Use at most 1024 characters."]
    # Counted after NFKC: 342 ligatures become 1026 letters.
    assert policy("\ufb03" * 342) == ["Use at most 1024 characters."]


def test_blocklist_is_bundled_canonical_and_loaded_once() -> None:
    blocklist = password_blocklist()
    assert blocklist is password_blocklist()
    assert len(blocklist) > 70_000
    assert {"password", "passwordpassword", "iloveyouforever", "trustno1"} <= blocklist
    assert all(entry and entry == normalise(entry).casefold().strip() for entry in blocklist)


@pytest.mark.parametrize(
    ("password", "min_length"),
    [
        ("passwordpassword", 15),
        ("PasswordPassword", 15),  # compared case-folded
        ("ILoveYouForever", 15),
        ("TrustNo1", 8),
        (" passwordpassword ", 15),
    ],
)
def test_common_and_breached_passwords_are_refused(password: str, min_length: int) -> None:
    problems = policy(password, min_length=min_length)
    assert has(problems, BLOCKLISTED)
    assert not has(policy(PASSPHRASE, min_length=min_length), BLOCKLISTED)


def test_blocklist_compares_the_whole_password_not_substrings() -> None:
    assert policy("passwordpassword " + PASSPHRASE) == []


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("aaaaaaaaaaaaaaaa", REPEATED_CHARACTER),
        ("ZZZZZZZZZZZZZZZZZZ", REPEATED_CHARACTER),
        ("abababababababab", REPEATED_PATTERN),
        ("xyz1xyz1xyz1xyz1", REPEATED_PATTERN),
        ("abcdefghijklmnop", SEQUENCE),
        ("ABCDEFGHIJKLMNOPQ", SEQUENCE),
        ("zyxwvutsrqponmlk", SEQUENCE),
        ("123456789012345", SEQUENCE),
        ("987654321098765", SEQUENCE),
        (FULLWIDTH_DIGITS, SEQUENCE),
        ("qwertyuiopasdfgh", SEQUENCE),
        ("lkjhgfdsapoiuytre", SEQUENCE),
        ("aaaa1111abcd4321zzz", SEQUENCE),
    ],
)
def test_repeated_and_sequential_passwords_are_refused(password: str, reason: str) -> None:
    assert has(policy(password), reason)
    assert not has(policy(PASSPHRASE), reason)


def test_patterns_must_cover_the_whole_password() -> None:
    assert policy("abcdefgh " + PASSPHRASE) == []
    assert policy("aaaaaaaa" + PASSPHRASE) == []


def test_context_words_are_refused_when_little_else_remains() -> None:
    problems = policy("AliceSmith2024!")
    assert has(problems, TOO_CLOSE)
    # Removing "alice" and "smith" leaves 8+ characters: that is far enough from the name.
    assert not has(policy("alice smith in a rowboat"), TOO_CLOSE)
    assert not has(policy(PASSPHRASE), TOO_CLOSE)


def test_context_threshold_is_eight_remaining_characters() -> None:
    assert not has(policy("alicetulip-ox", min_length=8), TOO_CLOSE)  # 8 remain
    assert has(policy("alicetulip-o", min_length=8), TOO_CLOSE)  # 7 remain
    # Short but free of context words: the length rule's business, not this one's.
    assert policy("tulip-o", min_length=7) == []


def test_email_local_part_and_its_pieces_are_context() -> None:
    email_only = ["alice.smith@example.com"]
    assert has(policy("Alice.Smith-12", min_length=8, context=email_only), TOO_CLOSE)
    assert has(policy("AliceSmith1234", min_length=8, context=email_only), TOO_CLOSE)


def test_site_name_is_always_context() -> None:
    assert has(policy("Bastion2024Bastion", context=[]), TOO_CLOSE)
    assert has(policy("bastiontulip-o", min_length=8, context=[]), TOO_CLOSE)


def test_context_words_shorter_than_three_characters_are_ignored() -> None:
    # Removing "ed" would leave ": , ; !" (7 characters); two-letter words are not removed.
    assert policy("ed: ed, ed; ed!", min_length=8, context=["Ed"]) == []
    assert has(policy("edd: edd, edd; edd!", min_length=8, context=["Edd"]), TOO_CLOSE)
