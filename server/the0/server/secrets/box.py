"""Secret config values sealed with AES-256-GCM under the THE0_SECRETS_KEY ring.

A sealed value is a string in place of the value, ``the0-secret:v1:<kid>:<base64url(nonce|ciphertext)>``
(``sealing.py``): the kid names the ring's key that sealed it (so keys rotate: ``the0-server rotate-secrets``
re-seals everything under the current key, then the old key can go), the 12-byte nonce is
random, and the associated data binds the value to its bot and path, so a sealed value copied
into another bot or field does not open. The JSON value itself is sealed (any JSON type).

Shown values (responses, events) carry ``PLACEHOLDER`` where a secret is set.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from the0.server.keys import KeyRing, key_ring
from the0.server.secrets.fields import Path, get_at, secret_paths, set_at
from the0.server.secrets.sealing import SealingRing, Unopenable
from the0.server.settings import Settings

PLACEHOLDER = "********"
PREFIX = "the0-secret:v1:"
_INFO = b"the0 bot config secrets v1"


class SecretUnreadable(Exception):
    """A sealed value no key of the ring opens (its key was removed too early, or the row was altered).

    The message names the bot, the field and the key id, never a value.
    """


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def mask(value: Any) -> Any:
    """``value`` with every sealed value replaced by ``PLACEHOLDER``: what callers and events see."""
    if is_sealed(value):
        return PLACEHOLDER
    if isinstance(value, dict):
        return {key: mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def _aad(bot_id: str, path: Path) -> bytes:
    return orjson.dumps([bot_id, list(path)])


class ConfigSecrets:
    """Seals and opens the secret fields of bot configs with one key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._sealing = SealingRing(ring, prefix=PREFIX, info=_INFO)

    @property
    def current_kid(self) -> str:
        return self._ring.current

    def __repr__(self) -> str:
        return f"ConfigSecrets({self._ring!r})"

    def is_current(self, sealed: str) -> bool:
        """Whether ``sealed`` is under the ring's current key (nothing for a rotation to do)."""
        return self._sealing.kid_of(sealed) == self._ring.current

    def seal_value(self, bot_id: str, path: Path, value: Any) -> str:
        return self._sealing.seal(orjson.dumps(value), _aad(bot_id, path))

    def open_value(self, bot_id: str, path: Path, sealed: str) -> Any:
        where = f"bot {bot_id} field config.{'.'.join(path)}"
        try:
            return orjson.loads(self._sealing.open(sealed, _aad(bot_id, path)))
        except Unopenable as error:
            if not error.known:
                raise SecretUnreadable(
                    f"{where}: sealed with key {error.kid!r}, which THE0_SECRETS_KEY no longer has") from None
            raise SecretUnreadable(f"{where}: key {error.kid!r} does not open it") from None
        except orjson.JSONDecodeError:
            raise SecretUnreadable(f"{where}: key {self._sealing.kid_of(sealed)!r} does not open it") from None

    def seal(self, bot_id: str, config: dict[str, Any], paths: frozenset[Path]) -> dict[str, Any]:
        """A copy of the plaintext ``config`` with the value at each of ``paths`` sealed."""
        sealed = copy.deepcopy(config)
        for path in paths:
            present, value = get_at(sealed, path)
            if present and not is_sealed(value):
                set_at(sealed, path, self.seal_value(bot_id, path, value))
        return sealed

    def reveal(self, bot_id: str, stored_config: dict[str, Any], bot_schema: dict[str, Any] | None) -> dict[str, Any]:
        """The stored config with its secrets in clear: only for the runtime (platform API), never a caller."""
        revealed = copy.deepcopy(stored_config)
        for path in secret_paths(bot_schema):
            present, value = get_at(revealed, path)
            if present and is_sealed(value):
                set_at(revealed, path, self.open_value(bot_id, path, value))
        return revealed

    def carry_over(
        self,
        bot_id: str,
        stored_config: dict[str, Any],
        stored_schema: dict[str, Any] | None,
        new_config: dict[str, Any],
        new_schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """``new_config`` with each stored secret it omits or sends back as PLACEHOLDER, in clear.

        Only fields secret in both versions' schemas carry over (a field that stopped being secret
        must be sent again). The result is plaintext, for validation; ``seal`` it before storing.
        """
        merged = copy.deepcopy(new_config)
        for path in secret_paths(stored_schema) & secret_paths(new_schema):
            present, value = get_at(merged, path)
            if present and value != PLACEHOLDER:
                continue
            stored_present, stored = get_at(stored_config, path)
            if stored_present and is_sealed(stored):
                set_at(merged, path, self.open_value(bot_id, path, stored))
        return merged

    def reseal(self, bot_id: str, stored_config: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Every sealed value of ``stored_config`` sealed again under the current key; and how many were."""
        count = 0

        def walk(value: Any, path: Path) -> Any:
            nonlocal count
            if is_sealed(value):
                if self.is_current(value):
                    return value
                count += 1
                return self.seal_value(bot_id, path, self.open_value(bot_id, path, value))
            if isinstance(value, dict):
                return {key: walk(item, (*path, key)) for key, item in value.items()}
            return value

        return walk(stored_config, ()), count


def placeholders_left(config: dict[str, Any], schema: dict[str, Any] | None) -> list[Path]:
    """Secret fields that still hold PLACEHOLDER: there was no stored value to keep."""
    return sorted(p for p in secret_paths(schema) if get_at(config, p) == (True, PLACEHOLDER))


def config_secrets_for(settings: Settings) -> ConfigSecrets:
    """The sealer of THE0_SECRETS_KEY; refuses to start without a key rather than store secrets in clear."""
    if not settings.secrets_keys:
        raise ValueError("THE0_SECRETS_KEY is not set: it seals the secret fields of bot configs")
    return ConfigSecrets(key_ring(settings.secrets_keys, None))
