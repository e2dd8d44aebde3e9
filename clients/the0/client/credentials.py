"""Which credential a call carries, and how a refused one is recovered from; shared by both clients.

A client may hold an API key and a login session (access + refresh token) at once. Calls carry the key
when there is one, except the RPCs that need a session (API-key management, Logout). Two refusals are
recovered from, once per call:

- ``TOKEN_EXPIRED`` on a session call: the refresh token buys a new pair (``RefreshToken``) and the call
  is repeated. Refresh tokens rotate on every use and reusing a rotated one revokes the whole session, so
  the new pair is handed to ``on_tokens`` at once (the CLI writes it to its config before anything else),
  and concurrent calls refresh only once: a caller whose token was already replaced just retries.
- ``API_KEY_INVALID`` on a key call (the key was revoked or has expired) while a session is held: the key
  is dropped, ``on_api_key_refused`` is told, and the call is repeated with the session.

A disabled account (``metadata.accountDisabled``, reason TOKEN_REVOKED, for a key or a session) is
recovered from by nothing: the key is kept, since it works again once an admin enables the account.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from the0.auth.v1 import auth_service_pb2
from the0.client.errors import The0Error

TokensCallback = Callable[[auth_service_pb2.AuthTokens], None]
RefusedKeyCallback = Callable[[The0Error], None]

class Used(Enum):
    NOTHING = "nothing"
    API_KEY = "api_key"
    SESSION = "session"


class Recovery(Enum):
    NONE = "none"
    REFRESH = "refresh"  # refresh the session (unless another call did already), then retry
    RETRY = "retry"  # credentials changed since the call started: retry as is


@dataclass
class Credentials:
    api_key: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    on_tokens: TokensCallback | None = None
    on_api_key_refused: RefusedKeyCallback | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(api_key={bool(self.api_key)}, session={bool(self.access_token)})"

    def metadata(self, session_only: bool) -> tuple[Used, str | None, list[tuple[str, str]]]:
        """What a call carries: which credential, the access token it was (for refresh races), the metadata.

        ``session_only``: the RPC accepts only a user session (auth_policy USER_SESSION in the protos).
        """
        if self.api_key and not session_only:
            return Used.API_KEY, None, [("authorization", f"ApiKey {self.api_key}")]
        if self.access_token:
            return Used.SESSION, self.access_token, [("authorization", f"Bearer {self.access_token}")]
        return Used.NOTHING, None, []

    def recovery(self, error: The0Error, used: Used, token_used: str | None) -> Recovery:
        if error.metadata.get("accountDisabled") == "true":
            return Recovery.NONE
        if used is Used.SESSION and error.reason == "TOKEN_EXPIRED" and self.refresh_token:
            return Recovery.RETRY if token_used != self.access_token else Recovery.REFRESH
        if used is Used.API_KEY and error.reason == "API_KEY_INVALID" and self.access_token:
            self.api_key = None
            if self.on_api_key_refused is not None:
                self.on_api_key_refused(error)
            return Recovery.RETRY
        return Recovery.NONE

    def take_tokens(self, tokens: auth_service_pb2.AuthTokens) -> None:
        """Keep a new session (login, register, refresh) and hand it on before anything else happens.

        A Login that answers a second-factor challenge holds no session yet: nothing changes.
        """
        if tokens.HasField("second_factor"):
            return
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token or self.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)

    def forget_session(self) -> None:
        self.access_token = None
        self.refresh_token = None
