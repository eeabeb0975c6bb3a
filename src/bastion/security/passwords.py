"""Hash, verify and vet passwords (argon2id storage, NIST SP 800-63B-4 policy)."""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import TypeGuard

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "OWASP_PARAMETERS",
    "HashParameters",
    "check_password_policy",
    "configure",
    "hash_password",
    "needs_rehash",
    "normalise",
    "password_blocklist",
    "verify_count",
    "verify_password",
]


@dataclass(frozen=True)
class HashParameters:
    """Hold the argon2id cost parameters (memory_cost in KiB)."""

    # OWASP Password Storage CS: argon2id m=19456 t=2 p=1 (the first-choice minimum).
    time_cost: int = 2
    memory_cost: int = 19456
    parallelism: int = 1


OWASP_PARAMETERS = HashParameters()

# OWASP Authentication CS and ASVS 5.0 6.2.9: permit at least 64 characters; the cap only bounds
# the work a single request can ask for (argon2 pre-hashes input with BLAKE2b, linear in length).
MAX_PASSWORD_LENGTH = 1024
# NIST SP 800-63B-4 §3.1.1.2: context-specific words (service name, username) are blocked.
SITE_CONTEXT_WORDS = ("bastion",)
_MIN_CONTEXT_WORD_LENGTH = 3
_MIN_REMAINING_AFTER_CONTEXT = 8
# Longest unit whose whole-password repetition ("abab...", "passpass...") counts as trivial.
_MAX_REPEATED_UNIT = 4
# Shortest run that counts as a sequence segment ("abc", "321", "qwe", "aaa").
_MIN_RUN = 3

_BLOCKLIST_PACKAGE = "bastion.security"
_BLOCKLIST_FILE = ("data", "common-passwords.txt.gz")

# Argon2 PHC string as argon2-cffi writes it. Bastion only ever stores argon2id v=19 (RFC 9106);
# anything else is treated as malformed so the dummy verify runs instead.
_PHC_ARGON2ID = re.compile(
    r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,7})"
    r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)
_MAX_STORED_HASH_LENGTH = 1024
# RFC 9106 §3.1 limits (also enforced by the reference implementation's decoder).
_MIN_SALT_BYTES = 8
_MIN_DIGEST_BYTES = 4
_MAX_UINT32 = 2**32 - 1
_MAX_LANES = 2**24 - 1


def _make_hasher(params: HashParameters) -> PasswordHasher:
    """Return an argon2id PasswordHasher for *params*, rejecting values argon2 would refuse."""
    if params.time_cost < 1 or params.parallelism < 1:
        raise ValueError("time_cost and parallelism must be at least 1")
    if params.memory_cost < 8 * params.parallelism:
        # RFC 9106 §3.1: m must be at least 8*p KiB.
        raise ValueError("memory_cost must be at least 8 * parallelism KiB")
    return PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        type=Type.ID,
    )


class _HasherState:
    """Pair one PasswordHasher with the dummy hash made lazily at its parameters."""

    __slots__ = ("_dummy", "_lock", "hasher", "parameters")

    def __init__(self, parameters: HashParameters) -> None:
        """Build the hasher for *parameters*; the dummy hash waits until first needed."""
        self.parameters = parameters
        self.hasher = _make_hasher(parameters)
        self._dummy: str | None = None
        self._lock = threading.Lock()

    def dummy_hash(self) -> str:
        """Return a hash of a random secret at this state's parameters, made once."""
        dummy = self._dummy
        if dummy is None:
            with self._lock:
                dummy = self._dummy
                if dummy is None:
                    dummy = self.hasher.hash(secrets.token_bytes(32))
                    self._dummy = dummy
        return dummy


_state = _HasherState(OWASP_PARAMETERS)
_verify_lock = threading.Lock()
_verify_total = 0
_blocklist_lock = threading.Lock()
_blocklist: frozenset[str] | None = None


def configure(params: HashParameters) -> None:
    """Swap the module-level argon2id hasher (and its dummy hash) for one at *params*."""
    global _state
    # Build first, then publish in one assignment: concurrent callers see old or new, never half.
    _state = _HasherState(params)


def normalise(password: str) -> str:
    """Return *password* in NFKC form and otherwise unchanged (no strip, no truncation)."""
    # NIST SP 800-63B-4 §3.1.1.2: apply NFKC/NFKD before hashing; verify the entire password.
    return unicodedata.normalize("NFKC", password)


def _secret(password: str) -> bytes:
    """Encode the normalised *password* for argon2, never failing on lone surrogates."""
    # Identical to UTF-8 for every well-formed string; "surrogatepass" keeps odd input hashable.
    return normalise(password).encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    """Return the argon2id PHC string of normalise(*password*) at the current parameters."""
    # OWASP Password Storage CS: store in PHC string format (algorithm, parameters, salt, hash).
    return _state.hasher.hash(_secret(password))


def _decode_b64(text: str) -> bytes | None:
    """Return the bytes of unpadded canonical base64 *text*, or None if it is not that."""
    if len(text) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return None
    # The argon2 decoder rejects non-zero trailing bits; so does this round trip.
    return raw if base64.b64encode(raw).rstrip(b"=").decode("ascii") == text else None


def _is_well_formed(stored_hash: object) -> TypeGuard[str]:
    """Return whether *stored_hash* is an argon2id PHC string argon2 will actually compute."""
    if not isinstance(stored_hash, str) or len(stored_hash) > _MAX_STORED_HASH_LENGTH:
        return False
    match = _PHC_ARGON2ID.fullmatch(stored_hash)
    if match is None:
        return False
    memory, time, lanes = (int(group) for group in match.group(1, 2, 3))
    salt = _decode_b64(match.group(4))
    digest = _decode_b64(match.group(5))
    return (
        salt is not None
        and digest is not None
        and len(salt) >= _MIN_SALT_BYTES
        and len(digest) >= _MIN_DIGEST_BYTES
        and lanes <= _MAX_LANES
        and 8 * lanes <= memory <= _MAX_UINT32
        and time <= _MAX_UINT32
    )


def _count_verify() -> None:
    """Add one to the process-wide verify counter."""
    global _verify_total
    with _verify_lock:
        _verify_total += 1


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Return whether *password* matches *stored_hash*, always doing exactly one argon2 verify."""
    state = _state
    secret = _secret(password) if isinstance(password, str) else None
    if secret is None or not _is_well_formed(stored_hash):
        # OWASP Authentication CS: no "quick exit" for unknown users or broken records; pay the
        # same argon2 cost against a dummy hash at the current parameters, then fail.
        target, secret, genuine = state.dummy_hash(), secret or b"", False
    else:
        target, genuine = stored_hash, True
    _count_verify()
    try:
        matched = state.hasher.verify(target, secret)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        # Defensive: the checks above should leave argon2 nothing else to reject.
        return False
    return matched and genuine


def needs_rehash(stored_hash: str) -> bool:
    """Return whether *stored_hash* was not made at the current parameters (malformed: True)."""
    # OWASP Password Storage CS: upgrade the work factor on the next successful login.
    if not _is_well_formed(stored_hash):
        return True
    return _state.hasher.check_needs_rehash(stored_hash)


def verify_count() -> int:
    """Return how many argon2 verifies this process has performed."""
    with _verify_lock:
        return _verify_total


def password_blocklist() -> frozenset[str]:
    """Return the bundled common/breached password list, loading it once on first use."""
    global _blocklist
    loaded = _blocklist
    if loaded is None:
        with _blocklist_lock:
            loaded = _blocklist
            if loaded is None:
                # Built offline by scripts/build_password_blocklist.py; see data/README.md.
                resource = resources.files(_BLOCKLIST_PACKAGE).joinpath(*_BLOCKLIST_FILE)
                text = gzip.decompress(resource.read_bytes()).decode("utf-8")
                loaded = frozenset(line for line in text.splitlines() if line)
                _blocklist = loaded
    return loaded


# Sequences a person "walks" along: the alphabet, the digits (9 -> 0 as on a keyboard) and the
# QWERTY rows read left to right, top to bottom. Each is followed cyclically in both directions.
_SEQUENCE_TRACKS = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "1234567890qwertyuiopasdfghjklzxcvbnm",
)


def _successor_maps() -> tuple[dict[str, str], ...]:
    """Return, for each track and direction, the map from a character to the next one."""
    maps: list[dict[str, str]] = []
    for track in _SEQUENCE_TRACKS:
        for walk in (track, track[::-1]):
            maps.append({char: walk[(index + 1) % len(walk)] for index, char in enumerate(walk)})
    return tuple(maps)


_SUCCESSORS = _successor_maps()

_REPEATED_CHARACTER = (
    "Don't use a single repeated character (like 'aaaaaaaa'): it is one of the first guesses."
)
_REPEATED_PATTERN = (
    "Don't repeat a short pattern (like 'abababab' or '12341234'): it is one of the first guesses."
)
_SIMPLE_SEQUENCE = (
    "Don't use simple sequences of letters, digits or keyboard keys (like 'abcdefgh', "
    "'98765432' or 'qwertyui'), alone or joined together: they are among the first guesses."
)
_BLOCKLISTED = (
    "This is a commonly used password that appears in lists of breached passwords; "
    "attackers try those first, so choose something else."
)
_TOO_CLOSE_TO_CONTEXT = (
    "This password is too close to your name, email or this site's name; "
    "add words that have nothing to do with them."
)


def _smallest_period(text: str) -> int:
    """Return the length of the shortest unit that *text* is a whole repetition of."""
    # Knuth-Morris-Pratt failure function: text is periodic in n - pi[n-1] iff that divides n.
    failure = [0] * len(text)
    for index in range(1, len(text)):
        length = failure[index - 1]
        while length and text[index] != text[length]:
            length = failure[length - 1]
        if text[index] == text[length]:
            length += 1
        failure[index] = length
    period = len(text) - failure[-1]
    return period if len(text) % period == 0 else len(text)


def _longest_runs(text: str) -> list[int]:
    """Return, per start index, the longest repeat-or-sequence run beginning there."""
    size = len(text)
    best = [1] * size
    for successor in (None, *_SUCCESSORS):
        run = [1] * size
        for index in range(size - 2, -1, -1):
            char = text[index]
            following = char if successor is None else successor.get(char)
            if following == text[index + 1]:
                run[index] = run[index + 1] + 1
            best[index] = max(best[index], run[index])
    return best


def _is_made_of_runs(text: str) -> bool:
    """Return whether *text* splits entirely into repeat/sequence runs of at least three."""
    # A run's substrings are runs, so segment [j, i) works iff MIN_RUN <= i - j <= longest[j];
    # sweep reachability forward with a difference array (linear in the length).
    longest = _longest_runs(text)
    size = len(text)
    coverage = [0] * (size + 2)
    active = 0
    reachable = [False] * (size + 1)
    reachable[0] = True
    for index in range(size + 1):
        active += coverage[index]
        if index and active > 0:
            reachable[index] = True
        if reachable[index] and index < size and longest[index] >= _MIN_RUN:
            coverage[index + _MIN_RUN] += 1
            coverage[index + longest[index] + 1] -= 1
    return reachable[size]


def _pattern_problem(folded: str) -> str | None:
    """Return why *folded* is a trivial repetition or sequence, or None if it is not."""
    # NIST SP 800-63B-4 §3.1.1.2: block "expected" values such as repetitive or sequential
    # characters (e.g. 'aaaaaa', '1234abcd').
    if len(folded) < _MIN_RUN:
        return None
    period = _smallest_period(folded)
    if period == 1:
        return _REPEATED_CHARACTER
    if period <= _MAX_REPEATED_UNIT and period < len(folded):
        return _REPEATED_PATTERN
    if _is_made_of_runs(folded):
        return _SIMPLE_SEQUENCE
    return None


def _context_tokens(context_words: Iterable[str]) -> list[str]:
    """Return the case-folded context words and their parts, longest first."""
    tokens: set[str] = set()
    for word in (*SITE_CONTEXT_WORDS, *context_words):
        if not isinstance(word, str):
            continue
        folded = normalise(word).casefold()
        # The whole value, an e-mail's local part, and each run of letters/digits in it.
        tokens.update((folded.strip(), folded.partition("@")[0].strip()))
        tokens.update(re.split(r"[\W_]+", folded))
    usable = (token for token in tokens if len(token) >= _MIN_CONTEXT_WORD_LENGTH)
    return sorted(usable, key=lambda token: (-len(token), token))


def _without_context(folded: str, tokens: list[str]) -> str:
    """Return *folded* with every occurrence of every token removed, until none is left."""
    remaining = folded
    changed = True
    while changed:
        changed = False
        for token in tokens:
            if token in remaining:
                remaining = remaining.replace(token, "")
                changed = True
    return remaining


def check_password_policy(
    password: str, *, min_length: int, context_words: Iterable[str]
) -> list[str]:
    """Return the reasons *password* is not acceptable as a new password (empty: acceptable)."""
    # NIST SP 800-63B-4 §3.1.1.2: length, block list and context words; no composition rules.
    candidate = normalise(password)
    # NIST SP 800-63B-4: each Unicode code point counts as one character (after normalisation).
    length = len(candidate)
    if length > MAX_PASSWORD_LENGTH:
        return [f"Use at most {MAX_PASSWORD_LENGTH} characters."]
    problems: list[str] = []
    if length < min_length:
        problems.append(f"Use at least {min_length} characters.")
    folded = candidate.casefold()
    # NIST: compare the entire password (not substrings) with the block list.
    blocklist = password_blocklist()
    if folded in blocklist or folded.strip() in blocklist:
        problems.append(_BLOCKLISTED)
    pattern = _pattern_problem(folded)
    if pattern is not None:
        problems.append(pattern)
    remaining = _without_context(folded, _context_tokens(context_words))
    if remaining != folded and len(remaining) < _MIN_REMAINING_AFTER_CONTEXT:
        problems.append(_TOO_CLOSE_TO_CONTEXT)
    return problems
