"""`the0 config`: profiles, one per API target (local, staging, production), each with its own login."""

from __future__ import annotations

from typing import Annotated

import typer

from the0.client.cli.common import Yes, confirm
from the0.client.cli.failures import NOT_FOUND, USAGE, CliError
from the0.client.cli.output import show, show_list
from the0.client.cli.profiles import DEFAULT_URL, config_path
from the0.client.cli.runtime import current

app = typer.Typer(help="Profiles: several API targets, each with its URL and saved login; which one is used.",
                  no_args_is_help=True)
ProfileName = Annotated[str, typer.Argument(metavar="NAME", help="A profile name, e.g. local or production.")]


def _summary(name: str, profile: dict[str, str]) -> dict[str, str]:
    return {
        "name": name,
        "current": "yes" if name == current().config.current else "",
        "url": profile.get("url", DEFAULT_URL),
        "email": profile.get("email", ""),
        "session": "saved" if profile.get("refreshToken") else "",
        "apiKey": f"{profile['apiKey'][:12]}…" if profile.get("apiKey") else "",
    }


@app.command()
def use(
    name: ProfileName,
    url: Annotated[str | None, typer.Option("--url", help="The profile's gRPC address, host:port.")] = None,
) -> None:
    """Switch to profile NAME (made if new); --url sets its address (the global --url only lasts one command)."""
    runtime = current()
    config = runtime.config
    config.current = name
    profile = config.profile(name)
    if url:
        profile["url"] = url
    config.save()
    runtime.err.print(f"Using profile {name} ({profile.get('url', DEFAULT_URL)})", markup=False)


@app.command("list")
def list_profiles() -> None:
    """Every profile: its URL, and whether a session or key is saved."""
    config = current().config
    rows = [_summary(name, profile) for name, profile in sorted(config.profiles.items())]
    if current().output == "table":
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("", "NAME", "URL", "EMAIL", "SESSION", "API KEY"):
            table.add_column(column)
        for row in rows:
            table.add_row("*" if row["current"] else "", row["name"], row["url"], row["email"], row["session"],
                          row["apiKey"])
        current().out.print(table)
    else:
        show_list(rows, "profile")


@app.command("show")
def show_profile() -> None:
    """The profile in use, the config file, and where the URL comes from (secrets shortened)."""
    runtime = current()
    value = _summary(runtime.profile_name, runtime.profile) | {"url": runtime.url, "file": str(config_path())}
    show(value, "profile")


@app.command()
def delete(name: ProfileName, yes: Yes = False) -> None:
    """Forget a profile and what it saved (the session and key stay valid on the server until they expire)."""
    config = current().config
    if name not in config.profiles:
        raise CliError(f"no profile {name!r}: `the0 config list` shows them", NOT_FOUND)
    if name == config.current:
        raise CliError(f"profile {name!r} is in use: `the0 config use OTHER` first", USAGE)
    confirm(f"Forget profile {name} and its saved credentials?", yes)
    del config.profiles[name]
    config.save()


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="config", rich_help_panel="Setup")
