"""`the0 admin`: accounts and the review queue (an admin's login session; API keys are refused)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from the0.admin.v1 import admin_service_pb2
from the0.auth.v1 import user_pb2
from the0.client.cli.common import AllPages, PageSize, PageToken, Yes, collect, confirm
from the0.client.cli.output import show, show_list
from the0.client.cli.runtime import current
from the0.client.values import to_dict

app = typer.Typer(help="Administration (admins only): accounts, the custom-bot review queue.",
                  no_args_is_help=True)
users = typer.Typer(help="Accounts: find, look at, disable/enable, require a new password, change the role.",
                    no_args_is_help=True)
app.add_typer(users, name="users")
UserId = Annotated[str, typer.Argument(metavar="ID", help="The account's id (`the0 admin users list`).")]


class State(StrEnum):
    active = "active"
    disabled = "disabled"


class Role(StrEnum):
    user = "user"
    admin = "admin"


STATES = {State.active: admin_service_pb2.USER_STATE_FILTER_ACTIVE,
          State.disabled: admin_service_pb2.USER_STATE_FILTER_DISABLED}
ROLES = {Role.user: user_pb2.ROLE_USER, Role.admin: user_pb2.ROLE_ADMIN}


@users.command("list")
def list_users(
    query: Annotated[str, typer.Option("--query", "-q", help="Email or username starts with this (any case).")
                     ] = "",
    state: Annotated[State | None, typer.Option(help="Only active or only disabled accounts.")] = None,
    role: Annotated[Role | None, typer.Option(help="Only this role.")] = None,
    page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False,
) -> None:
    """Every account, newest first."""
    client = current().client
    state_filter = STATES[state] if state else 0
    role_filter = ROLES[role] if role else 0
    found, token = collect(lambda t: client.list_users(query=query, state=state_filter, role=role_filter,
                                                       page_size=page_size, page_token=t),
                           "users", all_pages=all_pages, page_token=page_token)
    show_list(found, "account", next_page_token=token)


@users.command()
def get(user_id: UserId) -> None:
    """One account."""
    show(current().client.get_user(user_id), "account")


@users.command()
def disable(user_id: UserId, yes: Yes = False) -> None:
    """The account cannot log in; its sessions, tokens and API keys stop working at once."""
    confirm(f"Disable account {user_id}? Its sessions end and its API keys stop working", yes)
    show(current().client.disable_user(user_id), "account")


@users.command()
def enable(user_id: UserId) -> None:
    """Enable a disabled account: its API keys work again, it logs in anew."""
    show(current().client.enable_user(user_id), "account")


@users.command("force-reset")
def force_reset(user_id: UserId, yes: Yes = False) -> None:
    """Require a new password: every session ends; login is refused until the password is reset."""
    runtime = current()
    confirm(f"Require a new password of {user_id}? Every session of the account ends", yes)
    done = runtime.client.force_password_reset(user_id)
    if runtime.output == "table":
        runtime.err.print(f"{done.sessions_revoked} session(s) ended; login needs a password reset now",
                          markup=False)
        show(done.user, "account")
    else:
        show(to_dict(done), "result")


@users.command("reset-2fa")
def reset_two_factor(user_id: UserId, yes: Yes = False) -> None:
    """Turn two-factor login off for an owner who lost the authenticator and the recovery codes
    (check who they are first): every session ends; the password alone logs in again."""
    runtime = current()
    confirm(f"Turn two-factor login off for {user_id}? Every session of the account ends", yes)
    done = runtime.client.reset_two_factor(user_id)
    if runtime.output == "table":
        runtime.err.print(f"{done.sessions_revoked} session(s) ended; two-factor login is off", markup=False)
        show(done.user, "account")
    else:
        show(to_dict(done), "result")


@users.command("set-role")
def set_role(user_id: UserId, role: Annotated[Role, typer.Argument(help="user or admin.")], yes: Yes = False
             ) -> None:
    """Change the role; the account's sessions end, the new role applies at its next login."""
    confirm(f"Make {user_id} {role.value}? Its sessions end", yes)
    show(current().client.set_user_role(user_id, ROLES[role]), "account")


@app.command("review-queue")
def review_queue(page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False) -> None:
    """Custom-bot versions of every user awaiting human review, oldest first (`the0 custom-bots review`)."""
    client = current().client
    queue, token = collect(lambda t: client.list_custom_bot_review_queue(page_size=page_size, page_token=t),
                           "custom_bots", all_pages=all_pages, page_token=page_token)
    show_list(queue, "custom_bot", next_page_token=token)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="admin", rich_help_panel="Administration")
