"""Password hashing (Argon2id) and the strength rule for new passwords."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from market.core.errors import InvalidInput

MIN_LENGTH = 10
# The most common passwords of public breach lists that satisfy the length rule.
_COMMON = frozenset({
    "1234567890", "12345678910", "0123456789", "qwertyuiop", "1q2w3e4r5t", "1qaz2wsx3edc",
    "password12", "password123", "password1234", "passw0rd123", "iloveyou12", "abcdefghij",
    "qwerty1234", "qwerty12345", "aaaaaaaaaa", "1111111111", "0000000000", "a123456789",
    "woaini1314", "woaini5201314", "5201314520", "asdfghjkl1", "zxcvbnm123", "admin12345",
})


class Passwords:
    """Hashes and checks passwords with the installation's Argon2id cost settings."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


def check_strength(password: str, *, email: str = "") -> None:
    """Reject short, common or guessable passwords (length and a blocklist, as NIST 800-63B asks)."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"Use at least {MIN_LENGTH} characters.", field="password")
    lowered = password.lower()
    if lowered in _COMMON or len(set(lowered)) < 4:
        raise InvalidInput("This password is too easy to guess.", field="password")
    local_part = email.split("@", 1)[0].lower()
    if len(local_part) >= 4 and local_part in lowered:
        raise InvalidInput("The password must not contain your e-mail name.", field="password")
