"""`the0 sessions`: where you are logged in; end one session, or all of them (a login session is needed)."""

from __future__ import annotations

from typing import Annotated

import typer

from the0.client.cli.common import AllPages, PageSize, PageToken, Yes, collect, confirm
from the0.client.cli.output import show, show_list
from the0.client.cli.runtime import current

app = typer.Typer(help="Login sessions: list (* is this one), revoke one, log out everywhere.",
                  no_args_is_help=True)
SESSION_KEYS = ("accessToken", "refreshToken")


@app.command("list")
def list_sessions(page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False) -> None:
    """Your open sessions, newest first: user agent, address, last use; CURRENT marks this one."""
    client = current().client
    sessions, token = collect(lambda t: client.list_sessions(page_size=page_size, page_token=t), "sessions",
                              all_pages=all_pages, page_token=page_token)
    show_list(sessions, "session", next_page_token=token)


@app.command()
def revoke(session_id: Annotated[str, typer.Argument(metavar="ID")], yes: Yes = False) -> None:
    """End one session: its tokens are refused on every replica within a second."""
    runtime = current()
    confirm(f"End session {session_id}? Whoever uses it is logged out", yes)
    runtime.client.revoke_session(session_id)
    if runtime.output == "table":
        runtime.err.print(f"Ended session {session_id}", markup=False)
    else:
        show({}, "result")


@app.command("logout-everywhere")
def logout_everywhere(
    keep_current: Annotated[bool, typer.Option("--keep-current", help="Keep this session: end only the others.")
                            ] = False,
    yes: Yes = False,
) -> None:
    """End every session of your account (API keys keep working)."""
    runtime = current()
    which = "every other session" if keep_current else "every session, this one too"
    confirm(f"End {which}?", yes)
    ended = runtime.client.logout_everywhere(keep_current=keep_current)
    if not keep_current:
        runtime.save_profile(**dict.fromkeys(SESSION_KEYS, None))
    if runtime.output == "table":
        note = "" if keep_current else f"; removed the session from profile {runtime.profile_name}"
        runtime.err.print(f"Ended {ended.sessions_revoked} session(s){note}", markup=False)
    else:
        show({"sessionsRevoked": ended.sessions_revoked}, "result")


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="sessions", rich_help_panel="Account")
