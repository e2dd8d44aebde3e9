"""`the0 api-keys`: keys for scripts and this CLI (managing them needs a login session)."""

from __future__ import annotations

from typing import Annotated

import typer

from the0.client.cli.common import AllPages, PageSize, PageToken, Yes, collect, confirm
from the0.client.cli.output import show, show_list
from the0.client.cli.parsing import parse_time
from the0.client.cli.runtime import current
from the0.client.values import to_dict

app = typer.Typer(help="API keys: create (the secret is shown once), list, revoke.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by, e.g. laptop.")],
    expires: Annotated[str | None, typer.Option(help="Expire after a while (30d, 12h, 4w) or at an ISO 8601 "
                                                     "time; never when not given.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Keep the key in the profile: later commands use it.")] = False,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="What the key may do; repeat for several: full (the default), read, or "
                        "<resource>:read|write with resource account, bots, custom_bots or backtests.")] = None,
) -> None:
    """Create a key. Its secret is shown this once (and kept in the profile with --save)."""
    runtime = current()
    expire_time = parse_time(expires, "--expires", future=True) if expires else None
    created = runtime.client.create_api_key(name, expire_time=expire_time, scopes=scope or ())
    if save:
        runtime.save_profile(apiKey=created.secret, apiKeyId=created.api_key.id)
    if runtime.output != "table":
        show(to_dict(created), "created_key")
        return
    show(created.api_key, "api_key")
    runtime.out.print(f"secret (shown once): {created.secret}", markup=False)
    if save:
        runtime.err.print(f"Saved in profile {runtime.profile_name}: later commands authenticate with this key",
                          markup=False)


@app.command("list")
def list_keys(page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False) -> None:
    """Your keys, newest first: state, expiry, last use (never the secrets)."""
    client = current().client
    keys, token = collect(lambda t: client.list_api_keys(page_size=page_size, page_token=t), "api_keys",
                          all_pages=all_pages, page_token=page_token)
    show_list(keys, "api_key", next_page_token=token)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(metavar="ID")], yes: Yes = False) -> None:
    """Revoke a key: refused on every replica within a second."""
    runtime = current()
    confirm(f"Revoke API key {key_id}? Programs using it stop working", yes)
    revoked = runtime.client.revoke_api_key(key_id)
    if runtime.profile.get("apiKeyId") == key_id:
        runtime.save_profile(apiKey=None, apiKeyId=None)
        runtime.err.print(f"It was the key saved in profile {runtime.profile_name}: removed it", markup=False)
    show(revoked, "api_key")


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="api-keys", rich_help_panel="Resources")
