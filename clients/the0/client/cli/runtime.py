"""What every command shares: the global options, the config file and its profile, and the client.

The client is built once per run from, in order: THE0_API_KEY / the profile's saved key, and the
profile's session. Whatever the client learns (a refreshed session, a refused key) is written to the
profile at once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from rich.console import Console

from the0.auth.v1 import auth_service_pb2
from the0.client.cli.profiles import DEFAULT_URL, ConfigFile, config_path
from the0.client.client import The0Client
from the0.client.errors import The0Error

# id: only the id of each resource, for scripts (`BOT=$(the0 bots create ... --output id)`).
OUTPUTS = ("table", "json", "yaml", "id")


@dataclass
class Runtime:
    url_option: str | None = None
    profile_option: str | None = None
    output_option: str | None = None
    _config: ConfigFile | None = None
    _client: The0Client | None = None
    # Piped tables (`--output table | less`) are not cut to 80 columns.
    out: Console = field(default_factory=lambda: Console(highlight=False, emoji=False,
                                                         width=None if sys.stdout.isatty() else 250))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True, highlight=False, emoji=False))

    # -- config and profile ----------------------------------------------------

    @property
    def config(self) -> ConfigFile:
        if self._config is None:
            self._config = ConfigFile.load(config_path())
        return self._config

    @property
    def profile_name(self) -> str:
        return self.profile_option or os.environ.get("THE0_PROFILE") or self.config.current

    @property
    def profile(self) -> dict[str, str]:
        return self.config.profile(self.profile_name)

    @property
    def url(self) -> str:
        return self.url_option or os.environ.get("THE0_API_URL") or self.profile.get("url") or DEFAULT_URL

    def save_profile(self, **values: str | None) -> None:
        """Set (or, with None, remove) keys of the current profile, and write the file."""
        profile = self.profile
        for key, value in values.items():
            if value is None:
                profile.pop(key, None)
            else:
                profile[key] = value
        self.config.save()

    # -- output ----------------------------------------------------------------

    @property
    def output(self) -> str:
        """table for people on a terminal, JSON when piped, unless --output says otherwise."""
        if self.output_option:
            return self.output_option
        return "table" if sys.stdout.isatty() else "json"

    def warn(self, text: str) -> None:
        self.err.print(f"the0: {text}", markup=False, highlight=False)

    # -- the client ------------------------------------------------------------

    @property
    def client(self) -> The0Client:
        if self._client is None:
            profile = self.profile
            env_key = os.environ.get("THE0_API_KEY")
            self._client = The0Client(
                self.url,
                api_key=env_key or profile.get("apiKey"),
                access_token=profile.get("accessToken"),
                refresh_token=profile.get("refreshToken"),
                on_tokens=self._keep_tokens,
                on_api_key_refused=self._key_refused if not env_key else self._env_key_refused,
            )
        return self._client

    def _keep_tokens(self, tokens: auth_service_pb2.AuthTokens) -> None:
        # Refresh tokens rotate: the old one is dead from now on, so the new one is on disk before we go on.
        self.save_profile(accessToken=tokens.access_token, refreshToken=tokens.refresh_token or None)

    def _key_refused(self, error: The0Error) -> None:
        self.save_profile(apiKey=None, apiKeyId=None)
        self.warn("the saved API key was refused (revoked or expired): removed it from the profile and used "
                  "your login session instead; `the0 api-keys create NAME --save` makes a new one")

    def _env_key_refused(self, error: The0Error) -> None:
        self.warn("THE0_API_KEY was refused (revoked or expired): used your login session instead")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_current = Runtime()


def current() -> Runtime:
    return _current


def reset(**options: str | None) -> Runtime:
    global _current
    _current.close()
    _current = Runtime(**options)  # type: ignore[arg-type]
    return _current
