"""Accounts and sessions: register, login, logout, whoami, refresh (top-level commands)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from the0.client.cli.failures import NOT_AUTHENTICATED, USAGE, CliError
from the0.client.cli.output import ago, show
from the0.client.cli.runtime import current
from the0.client.errors import AuthenticationError, The0Error, UnavailableError
from the0.client.values import to_dict

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin (scripts).")]


def _password(from_stdin: bool, *, twice: bool = False) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password on: use --password-stdin", USAGE)
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=twice, err=True)
    return password


def _email(email: str | None) -> str:
    """--email, else asked for (the profile's last email is the default), else the profile's."""
    if email:
        return email
    saved = current().profile.get("email")
    if not sys.stdin.isatty():
        if saved:
            return saved
        raise CliError("give --email (no terminal to ask on)", USAGE)
    value: str = typer.prompt("Email", default=saved, err=True)
    return value


def _signed_in(tokens: object, verb: str) -> None:
    runtime = current()
    user = tokens.user  # type: ignore[attr-defined]
    # --url is saved; a URL from THE0_API_URL is saved only into a profile that has none yet.
    runtime.save_profile(url=runtime.url_option or runtime.profile.get("url") or runtime.url, email=user.email)
    if runtime.output == "table":
        runtime.err.print(f"{verb} as {user.username} ({user.email}) at {runtime.url}, profile "
                          f"{runtime.profile_name}; the session is kept in the config file", markup=False)
    else:
        show(to_dict(user), "user")


def register(
    email: Annotated[str | None, typer.Option(help="Your email address (asked for when not given).")] = None,
    username: Annotated[str | None, typer.Option(help="3 to 50 letters, digits, '_', '.' or '-'.")] = None,
    first_name: Annotated[str, typer.Option(help="Optional.")] = "",
    last_name: Annotated[str, typer.Option(help="Optional.")] = "",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an account and log in (the session is saved in the profile, and so is --url)."""
    address = _email(email)
    if not username:
        if not sys.stdin.isatty():
            raise CliError("give --username (no terminal to ask on)", USAGE)
        username = typer.prompt("Username", err=True)
    password = _password(password_stdin, twice=True)
    tokens = current().client.register(address, password, username or "", first_name=first_name,
                                       last_name=last_name)
    _signed_in(tokens, "Registered and logged in")


def login(
    email: Annotated[str | None, typer.Option(help="Your email address (asked for when not given).")] = None,
    password_stdin: PasswordStdin = False,
    code: Annotated[str | None, typer.Option(
        "--code", help="With two-factor login on: the app's current code (asked for when not given).")] = None,
    recovery_code: Annotated[str | None, typer.Option(
        "--recovery-code", help="With two-factor login on: an unused recovery code instead.")] = None,
) -> None:
    """Log in; the session (refreshed on its own as it expires) and --url are saved in the profile."""
    address = _email(email)
    password = _password(password_stdin)
    client = current().client
    tokens = client.login(address, password)
    if tokens.HasField("second_factor"):  # two-factor login: the password alone gives no session
        # Imported here: two_factor imports this module (the password prompt).
        from the0.client.cli.commands.two_factor import given_factor

        factor_code, factor_recovery = given_factor(code, recovery_code)
        tokens = client.complete_login(tokens.second_factor.challenge_token, code=factor_code,
                                       recovery_code=factor_recovery)
    _signed_in(tokens, "Logged in")


def logout() -> None:
    """End the session on the server, revoke the API key `api-keys create --save` saved, forget both."""
    runtime = current()
    profile = dict(runtime.profile)
    if not any(profile.get(key) for key in ("accessToken", "refreshToken", "apiKey")):
        runtime.err.print(f"Not logged in (profile {runtime.profile_name}): nothing to do", markup=False)
        return
    client = runtime.client
    notes: list[str] = []
    if profile.get("apiKeyId") and profile.get("accessToken"):
        try:
            client.revoke_api_key(profile["apiKeyId"])
            notes.append("revoked the saved API key")
        except The0Error as error:
            notes.append(f"could not revoke the saved API key ({error.reason or error.code.name}): "
                         f"`the0 api-keys revoke {profile['apiKeyId']}` after logging in again")
    if profile.get("accessToken"):
        try:
            client.logout()
            notes.append("ended the session on the server")
        except AuthenticationError:
            notes.append("the session had already ended")
        except UnavailableError:
            notes.append("could not reach the server: the session ends by itself when its tokens expire")
    runtime.save_profile(**dict.fromkeys(("accessToken", "refreshToken", "apiKey", "apiKeyId"), None))
    runtime.err.print(f"Logged out of profile {runtime.profile_name}: " + "; ".join(
        [*notes, "removed the saved credentials"]), markup=False)


def whoami() -> None:
    """The account the saved credentials (or THE0_API_KEY) belong to."""
    show(current().client.me(), "user")


def refresh() -> None:
    """Trade the saved refresh token for a new session now (commands also do it on their own)."""
    runtime = current()
    if not runtime.profile.get("refreshToken"):
        raise CliError(f"no session saved in profile {runtime.profile_name}: run `the0 login`", NOT_AUTHENTICATED)
    tokens = runtime.client.refresh()
    if runtime.output == "table":
        expires = ago(to_dict(tokens).get("accessTokenExpireTime"), exact=True)
        runtime.err.print(f"Session refreshed: the new access token expires {expires}", markup=False)
    else:
        value = to_dict(tokens)
        for secret in ("accessToken", "refreshToken"):
            value.pop(secret, None)  # saved in the profile; never printed
        show(value, "tokens")


def install(root: typer.Typer) -> None:
    for command in (register, login, logout, whoami, refresh):
        root.command(rich_help_panel="Account")(command)
