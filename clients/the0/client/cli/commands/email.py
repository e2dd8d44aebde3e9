"""`the0 email`: verify your email address with a mailed token."""

from __future__ import annotations

from typing import Annotated

import typer

from the0.client.cli.output import show
from the0.client.cli.runtime import current

app = typer.Typer(help="Email address: ask for a verification mail, verify with its token.", no_args_is_help=True)


@app.command("verify-request")
def verify_request() -> None:
    """Mail a verification token to your address (nothing is sent when it is already verified)."""
    runtime = current()
    runtime.client.request_email_verification()
    if runtime.output == "table":
        runtime.err.print("A verification token is on its way by mail (unless the address is already verified): "
                          "`the0 email verify TOKEN`", markup=False)
    else:
        show({}, "result")


@app.command()
def verify(token: Annotated[str, typer.Argument(metavar="TOKEN", help="The token from the mail (single use).")]
           ) -> None:
    """Mark the address verified; shows the account."""
    show(current().client.verify_email(token), "account")


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="email", rich_help_panel="Account")
