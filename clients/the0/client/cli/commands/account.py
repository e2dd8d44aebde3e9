"""`the0 account delete`: delete your account for good (a login session and your password are needed)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from the0.client.cli.commands.passwords import PasswordStdin, SecretReader
from the0.client.cli.failures import NOT_CONFIRMED, CliError
from the0.client.cli.output import show
from the0.client.cli.runtime import current
from the0.client.values import to_dict

app = typer.Typer(help="Your account: delete it.", no_args_is_help=True)
CREDENTIAL_KEYS = ("accessToken", "refreshToken", "apiKey", "apiKeyId")


def _confirm_by_email(email: str, yes: bool) -> None:
    """Typing the address, not just "y": there is no undo."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError("deleting the account: not confirmed (no terminal to ask on); add --yes", NOT_CONFIRMED)
    typed: str = typer.prompt(f"This deletes {email} and everything in it, for good. Type the email to confirm",
                              err=True)
    if typed.strip().lower() != email.lower():
        raise CliError("not confirmed (the email did not match): nothing was changed", NOT_CONFIRMED)


@app.command()
def delete(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to type the email.")] = False,
    password_stdin: PasswordStdin = False,
    code: Annotated[str, typer.Option("--code", help="With two-factor login on: the app's current code "
                                      "(asked for at a terminal when left out).")] = "",
    recovery_code: Annotated[str, typer.Option("--recovery-code", help="A recovery code instead of --code.")] = "",
) -> None:
    """Delete your account: bots stopped and deleted, backtests and custom bots deleted, API keys revoked,
    every session ended, the email and username freed (docs/accounts.md)."""
    runtime = current()
    me = runtime.client.me()
    email = me.email
    _confirm_by_email(email, yes)
    password = SecretReader(password_stdin).read("Password")
    if me.two_factor_enabled and not (code or recovery_code) and sys.stdin.isatty():
        code = typer.prompt("Two-factor code", err=True).strip()
    done = runtime.client.delete_account(password, code=code, recovery_code=recovery_code)
    runtime.save_profile(**dict.fromkeys(CREDENTIAL_KEYS, None))
    if runtime.output == "table":
        runtime.err.print(
            f"Deleted account {email}: {done.bots_deleted} bot(s) ({done.bots_stopped} stopped), "
            f"{done.backtests_deleted} backtest(s), {done.custom_bots_deleted} custom-bot version(s); "
            f"{done.api_keys_revoked} API key(s) revoked, {done.sessions_revoked} session(s) ended; "
            f"removed the credentials from profile {runtime.profile_name}", markup=False)
    else:
        show(to_dict(done), "result")


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="account", rich_help_panel="Account")
