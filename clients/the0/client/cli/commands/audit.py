"""`the0 audit`: the security log of your account (or, for an admin, of every account)."""

from __future__ import annotations

from typing import Annotated

import typer

from the0.auth.v1 import auth_service_pb2
from the0.client.cli.common import AllPages, PageSize, PageToken, collect
from the0.client.cli.output import show_list
from the0.client.cli.parsing import parse_time
from the0.client.cli.runtime import current

app = typer.Typer(help="The audit trail: logins, password and key changes, admin actions.", no_args_is_help=True)


@app.command("list")
def list_events(
    type: Annotated[str, typer.Option("--type", help="Only this type (login.failed), or every type starting "
                                                     "with the text before a final * (login.*).")] = "",
    since: Annotated[str | None, typer.Option(help="From this long ago (30m, 1h, 2d) or an ISO 8601 time.")] = None,
    until: Annotated[str | None, typer.Option(help="Before this long ago or this ISO 8601 time.")] = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="Every account's events (an admin's login "
                                                                "session only).")] = False,
    user: Annotated[str | None, typer.Option("--user", metavar="ID", help="One account's events, as actor or "
                                                                          "subject (admin).")] = None,
    page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False,
) -> None:
    """Events newest first: time, type, who did it, to whom, from where."""
    client = current().client
    since_time = parse_time(since, "--since") if since else None
    until_time = parse_time(until, "--until") if until else None
    admin = all_users or user is not None  # across users: AdminService, an admin's session only

    def page(token: str) -> auth_service_pb2.ListAuditEventsResponse:
        if admin:
            return client.list_all_audit_events(user_id=user or "", type=type, since=since_time, until=until_time,
                                                page_size=page_size, page_token=token)
        return client.list_audit_events(type=type, since=since_time, until=until_time, page_size=page_size,
                                        page_token=token)

    events, token = collect(page, "audit_events", all_pages=all_pages, page_token=page_token)
    show_list(events, "audit_event", next_page_token=token)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="audit", rich_help_panel="Account")
