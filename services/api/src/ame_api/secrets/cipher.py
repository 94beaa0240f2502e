"""AES-256-GCM for stored secret values, under keys named by id so that rotation can re-encrypt."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyUnavailable(RuntimeError):
    """A value is encrypted under a key the server no longer has, or the server has none."""


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    nonce: bytes
    key_id: str


def _associated(organisation: str, name: str) -> bytes:
    # Binds a ciphertext to its row: copied under another organisation or name, it does not decrypt.
    return f"ame-secret\x00{organisation}\x00{name}".encode()


class SecretCipher:
    def __init__(self, keys: dict[str, bytes], active_key: str | None) -> None:
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key = active_key

    @property
    def configured(self) -> bool:
        return self.active_key is not None and self.active_key in self._keys

    def seal(self, organisation: str, name: str, value: str) -> Sealed:
        if not self.configured or self.active_key is None:
            raise KeyUnavailable("the server has no secrets key configured (AME_SECRETS_KEYS)")
        nonce = os.urandom(12)  # 96 bits, fresh per write, as GCM requires
        ciphertext = self._keys[self.active_key].encrypt(nonce, value.encode(), _associated(organisation, name))
        return Sealed(ciphertext, nonce, self.active_key)

    def open(self, organisation: str, name: str, sealed: Sealed) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise KeyUnavailable(f"secret {name!r} is encrypted under key {sealed.key_id!r}, which is not configured")
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, _associated(organisation, name)).decode()
        except InvalidTag:
            raise KeyUnavailable(f"secret {name!r} does not decrypt under key {sealed.key_id!r}") from None
