"""`the0 2fa`: two-factor login with an authenticator app (TOTP): enable, disable, status.

`the0 login` asks for the code when the account has it on (commands/auth.py).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from the0.client.cli.commands.auth import PasswordStdin, _password
from the0.client.cli.failures import USAGE, CliError
from the0.client.cli.output import show
from the0.client.cli.runtime import current

app = typer.Typer(help="Two-factor login with an authenticator app (TOTP): enable, disable, status.",
                  no_args_is_help=True)

CodeOption = Annotated[str | None, typer.Option("--code", help="The authenticator app's current 6-digit code.")]
RecoveryOption = Annotated[str | None, typer.Option("--recovery-code", help="One of your unused recovery codes.")]


def ask_code(prompt: str = "Code from your authenticator app (or a recovery code)") -> tuple[str, str]:
    """(code, recovery code) typed at the terminal: 6 digits are a code, anything else a recovery code."""
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the code on: give --code (or --recovery-code)", USAGE)
    typed: str = typer.prompt(prompt, err=True).strip()
    return (typed, "") if len(typed) == 6 and typed.isdigit() else ("", typed)


def given_factor(code: str | None, recovery_code: str | None) -> tuple[str, str]:
    if code and recovery_code:
        raise CliError("give --code or --recovery-code, not both", USAGE)
    if code or recovery_code:
        return code or "", recovery_code or ""
    return ask_code()


@app.command()
def enable(
    code: Annotated[str | None, typer.Option(
        "--code", help="Confirm the enrolment begun before (by `the0 2fa enable` without a terminal) with "
                       "this code, instead of beginning a new one.")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Turn two-factor login on: add the printed otpauth:// URI (or secret) to an authenticator app, type
    its first code; prints recovery codes, shown this once. Without a terminal it only begins the enrolment
    (the URI is printed) and `the0 2fa enable --code CODE` finishes it."""
    runtime = current()
    client = runtime.client
    if code is None:
        enrollment = client.begin_totp_enrollment(_password(password_stdin))
        if not sys.stdin.isatty():
            show({"secret": enrollment.secret, "provisioningUri": enrollment.provisioning_uri}, "totp_enrollment")
            runtime.err.print("Add it to your authenticator app, then: the0 2fa enable --code CODE", markup=False)
            return
        runtime.err.print("Add this to your authenticator app (as a QR code of the URI, or the secret by hand):",
                          markup=False)
        runtime.err.print(f"  {enrollment.provisioning_uri}\n  secret: {enrollment.secret}", markup=False,
                          highlight=False)
        code = ask_code("First code from the app")[0]
        if not code:
            raise CliError("a code is 6 digits", USAGE)
    confirmed = client.confirm_totp_enrollment(code)
    codes = list(confirmed.recovery_codes)
    if runtime.output != "table":
        show({"twoFactorEnabled": True, "recoveryCodes": codes}, "recovery_codes")
        return
    runtime.err.print("Two-factor login is on. Recovery codes (each logs in once without the app; shown only "
                      "now, keep them somewhere safe):", markup=False)
    runtime.out.print("\n".join(codes), markup=False, highlight=False)


@app.command()
def disable(code: CodeOption = None, recovery_code: RecoveryOption = None,
            password_stdin: PasswordStdin = False) -> None:
    """Turn two-factor login off: needs your password and a current code (or a recovery code)."""
    runtime = current()
    password = _password(password_stdin)
    factor_code, factor_recovery = given_factor(code, recovery_code)
    runtime.client.disable_totp(password, code=factor_code, recovery_code=factor_recovery)
    if runtime.output != "table":
        show({"twoFactorEnabled": False}, "two_factor")
        return
    runtime.err.print("Two-factor login is off; the recovery codes no longer work", markup=False)


@app.command()
def status() -> None:
    """Whether two-factor login is on for your account."""
    runtime = current()
    enabled = runtime.client.me().two_factor_enabled
    if runtime.output != "table":
        show({"twoFactorEnabled": enabled}, "two_factor")
        return
    runtime.out.print(f"Two-factor login is {'on' if enabled else 'off'}", markup=False)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="2fa", rich_help_panel="Account")
