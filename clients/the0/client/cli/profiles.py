"""The CLI's config file: profiles (one per API target, like the original CLI's `env`), each with its URL
and what `login` and `api-keys create --save` saved.

``~/.the0/config.json`` (or THE0_CONFIG), mode 0600 since it holds credentials, written whole to a
temporary file and renamed, so a crash never leaves half a file (and never loses a rotated refresh token
already on disk):

    {"current": "default",
     "profiles": {"default": {"url": "localhost:50051", "email": "...", "accessToken": "...",
                              "refreshToken": "...", "apiKey": "the0_...", "apiKeyId": "..."}}}

A file of the earlier flat form ({"accessToken": ..., "apiKey": ...}) is read as the profile "default".
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from the0.client.cli.failures import USAGE, CliError

DEFAULT_URL = "localhost:50051"
DEFAULT_PROFILE = "default"
CREDENTIAL_KEYS = ("accessToken", "refreshToken", "apiKey", "apiKeyId", "email")
PROFILE_KEYS = ("url", *CREDENTIAL_KEYS)


def config_path(env: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    return Path(env.get("THE0_CONFIG") or Path.home() / ".the0" / "config.json")


@dataclass
class ConfigFile:
    path: Path
    current: str = DEFAULT_PROFILE
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as error:
            raise CliError(f"the config file {path} is not valid JSON ({error.msg} at line {error.lineno}): "
                           "fix it, or delete it and log in again", USAGE) from None
        except OSError as error:
            raise CliError(f"cannot read the config file {path}: {error.strerror}", USAGE) from None
        if not isinstance(data, dict):
            raise CliError(f"the config file {path} must hold a JSON object: fix it, or delete it", USAGE)
        if "profiles" not in data:  # the earlier flat form
            flat = {key: value for key, value in data.items() if key in PROFILE_KEYS and isinstance(value, str)}
            return cls(path, DEFAULT_PROFILE, {DEFAULT_PROFILE: flat} if flat else {})
        profiles = data.get("profiles")
        if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
            raise CliError(f"the config file {path}: `profiles` must map names to objects", USAGE)
        return cls(path, str(data.get("current") or DEFAULT_PROFILE), _strings(profiles))

    def profile(self, name: str | None = None) -> dict[str, str]:
        """The named (or current) profile, created empty if it does not exist yet."""
        return self.profiles.setdefault(name or self.current, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps({"current": self.current, "profiles": self.profiles}, indent=2) + "\n"
        fd, temporary = tempfile.mkstemp(prefix=".config-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _strings(profiles: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {str(name): {k: v for k, v in values.items() if isinstance(v, str)} for name, values in profiles.items()}
