"""Encryption of secrets at rest (Steam passwords) with AES-256-GCM.

A keyring holds one or more 32-byte keys; the first encrypts, all decrypt. Each ciphertext is
stored with the id of its key (the first 8 bytes of the key's SHA-256, in hex), so keys can be
rotated: put a new key first, run `wallwhale keys rotate`, then drop the old key. The row's id is
bound as associated data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
KEY_BYTES = 32


class KeyringError(Exception):
    """The keys are missing, malformed, or do not open a stored secret."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def generate_key() -> str:
    """A new key, base64-encoded, for WALLWHALE_SECRET_KEY or a line of the key file."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: not base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{where}: must decode to {KEY_BYTES} bytes, not {len(key)}")
    return key


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    key_id: str


class Keyring:
    def __init__(self, keys: list[bytes]):
        if not keys:
            raise KeyringError("no encryption key")
        self._keys = {key_id(key): AESGCM(key) for key in keys}
        self.current_id = key_id(keys[0])

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """One base64 key per line (the first is current); blank lines and # comments are skipped."""
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise KeyringError(f"cannot read the key file {path}: {exc.strerror}") from None
        keys = [
            parse_key(line, f"{path} line {number}")
            for number, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return cls(keys)

    @classmethod
    def development(cls, path: Path) -> Keyring:
        """The key file of a development installation, created (mode 600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"# WallWhale development key; keep it private\n{generate_key()}\n")
        return cls.from_file(path)

    def seal(self, plaintext: str, bound_to: str) -> Sealed:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._keys[self.current_id].encrypt(nonce, plaintext.encode(), bound_to.encode())
        return Sealed(nonce + sealed, self.current_id)

    def open(self, sealed: Sealed, bound_to: str) -> str:
        cipher = self._keys.get(sealed.key_id)
        if cipher is None:
            raise KeyringError(f"the key {sealed.key_id} is not in the keyring")
        nonce, body = sealed.ciphertext[:_NONCE_BYTES], sealed.ciphertext[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, bound_to.encode()).decode()
        except InvalidTag:
            raise KeyringError("a stored secret does not decrypt: wrong key or altered data") from None


def load_keyring(secret_key: str | None, key_file: Path | None, development_file: Path) -> Keyring:
    """The configured keyring: WALLWHALE_SECRET_KEY, else the key file, else (development only; the
    configuration refuses production without a key) a key file in the data directory."""
    if secret_key:
        return Keyring([parse_key(secret_key, "WALLWHALE_SECRET_KEY")])
    if key_file is not None:
        return Keyring.from_file(key_file)
    return Keyring.development(development_file)
