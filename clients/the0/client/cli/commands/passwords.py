"""`the0 password`: change it, or reset it with a mailed token.

Passwords are never arguments (they would land in the shell's history and in `ps`): they are asked for
with a hidden prompt on a terminal, or read from stdin, one per line, with --password-stdin.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from the0.client.cli.failures import USAGE, CliError
from the0.client.cli.output import show
from the0.client.cli.runtime import current

PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password(s) from stdin, one per line, in the order the prompts ask.")]

app = typer.Typer(help="Passwords: change yours, or reset a forgotten one with the mailed token.",
                  no_args_is_help=True)


class SecretReader:
    """Reads each secret from its own stdin line (scripts), or asks for it with a hidden prompt."""

    def __init__(self, from_stdin: bool) -> None:
        self.from_stdin = from_stdin

    def read(self, prompt: str, *, twice: bool = False) -> str:
        if self.from_stdin:
            line = sys.stdin.readline()
            if not line:
                raise CliError(f"stdin ended before the {prompt.lower()} (one per line)", USAGE)
            return line.rstrip("\n")
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for the password on: use --password-stdin", USAGE)
        value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=twice, err=True)
        return value


def _done(text: str, value: dict[str, object]) -> None:
    """A message for people; for programs the REST API's answer."""
    runtime = current()
    if runtime.output == "table":
        runtime.err.print(text, markup=False)
    else:
        show(value, "result")


@app.command()
def change(password_stdin: PasswordStdin = False) -> None:
    """Change your password (the current one first). Your other sessions end; this one stays."""
    reader = SecretReader(password_stdin)
    current_password = reader.read("Current password")
    new_password = reader.read("New password", twice=True)
    changed = current().client.change_password(current_password, new_password)
    _done(f"Password changed; {changed.sessions_revoked} other session(s) ended (this one stays)",
          {"sessionsRevoked": changed.sessions_revoked})


@app.command("reset-request")
def reset_request(email: Annotated[str, typer.Argument(help="The account's email address.")]) -> None:
    """Ask for a reset token by mail (the answer is the same whether the address has an account or not)."""
    current().client.request_password_reset(email)
    _done(f"If {email} has an account, a reset token is on its way by mail: "
          "`the0 password reset --token TOKEN`", {})


@app.command()
def reset(
    token: Annotated[str, typer.Option("--token", help="The token from the reset mail (single use).")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a new password with the mailed token. Every session of the account ends: log in again."""
    new_password = SecretReader(password_stdin).read("New password", twice=True)
    current().client.reset_password(token, new_password)
    _done("Password reset; every session of the account has ended: `the0 login` with the new password", {})


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="password", rich_help_panel="Account")
