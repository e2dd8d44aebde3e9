"""The root command: global options, and the command groups, one module each under ``commands/``.

Adding a group (say ``the0 sessions``) is one module with an ``install(root)`` function and one entry in
``GROUPS``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from the0.client.cli import runtime
from the0.client.cli.commands import (
    account,
    admin,
    api_keys,
    audit,
    auth,
    backtests,
    bots,
    config,
    custom_bots,
    email,
    health,
    passwords,
    sessions,
    two_factor,
)
from the0.client.cli.failures import EXIT_CODES

GROUPS = (auth, two_factor, passwords, email, sessions, account, api_keys, audit, custom_bots, bots, backtests,
          config, health, admin)

EPILOG = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."

root = typer.Typer(
    name="the0",
    help="the0 from the command line: upload custom bots, run bots and backtests, follow them.\n\n"
    "Start with `the0 login` (or `the0 register`); docs/cli.md and docs/bots-and-backtests.md tell more.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@root.callback()
def global_options(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The API's gRPC address, host:port (THE0_API_URL; the profile's; localhost:50051). "
            "Saved in the profile by login and register.",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", help="Use this profile for one command (THE0_PROFILE; `the0 config use` switches)."
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="table, json, yaml, or id (ids only, for scripts); default: table on a terminal, json when piped.",
        ),
    ] = None,
) -> None:
    """Global options: allowed before or after the command's name."""
    if output is not None and output not in runtime.OUTPUTS:
        raise typer.BadParameter(f"must be one of {', '.join(runtime.OUTPUTS)}", param_hint="--output")
    runtime.reset(url_option=url, profile_option=profile, output_option=output)


for group in GROUPS:
    group.install(root)
