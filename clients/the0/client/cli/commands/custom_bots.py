"""`the0 custom-bots`: the code you upload, its review, its versions (docs/bots-and-backtests.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from the0.client.cli import bundle
from the0.client.cli.common import AllPages, PageSize, PageToken, collect, state_line, watch
from the0.client.cli.failures import USAGE, CliError
from the0.client.cli.output import human_bytes, show, show_list, show_text
from the0.client.cli.runtime import current
from the0.client.cli.transfer import download_to, progress_bar

app = typer.Typer(help="Custom bots: deploy your bot's folder, follow its review, list and download versions.",
                  no_args_is_help=True)
CustomBotId = Annotated[str, typer.Argument(metavar="ID", help="The version's id (`the0 custom-bots list`).")]


@contextlib.contextmanager
def _archive(path: Path) -> Iterator[Path]:
    """A zip to upload: the given .zip (checked as is) or the folder packed and checked."""
    if path.is_dir():
        packed = bundle.pack_folder(path)
        try:
            current().err.print(f"Packed {len(packed.files)} files of {path} ({human_bytes(packed.size)}): "
                                f"{packed.manifest.manifest.name} {packed.manifest.manifest.version}, "
                                "bot-config.yaml checked", markup=False)
            yield packed.path
        finally:
            packed.path.unlink(missing_ok=True)
    elif path.is_file():
        bundle.check(path)
        yield path
    else:
        raise CliError(f"no such file or folder: {path}", USAGE)


def _upload(path: Path) -> None:
    runtime = current()
    with _archive(path) as archive:
        size = archive.stat().st_size
        with progress_bar("uploading", size) as advance:
            uploaded = runtime.client.upload_custom_bot(archive, progress=advance)
    show(uploaded, "custom_bot")
    if runtime.output == "table":
        runtime.err.print(f"Uploaded; it is reviewed now: `the0 custom-bots watch {uploaded.id}`", markup=False)


@app.command()
def deploy(
    folder: Annotated[Path, typer.Argument(help="The bot's folder, holding bot-config.yaml.")] = Path(),
) -> None:
    """Upload a new version from the bot's folder (default: the current folder).

    Left out: what .the0ignore says (gitignore rules), and __pycache__/, .git/, *.log, tests/, .env, .venv/.

    bot-config.yaml is checked here, by the server's own rules, before anything is sent.
    """
    _upload(folder)


@app.command()
def upload(path: Annotated[Path, typer.Argument(help="A .zip with bot-config.yaml at its root, or a folder.")]
           ) -> None:
    """Upload a new version from a .zip (or a folder, as `deploy`)."""
    _upload(path)


@app.command()
def validate(
    folder: Annotated[Path, typer.Argument(help="The bot's folder, holding bot-config.yaml.")] = Path(),
) -> None:
    """Check a bot's folder as an upload would, without uploading; lists the files that would go in."""
    packed = bundle.pack_folder(folder)
    try:
        manifest = packed.manifest.manifest
        value = {"name": manifest.name, "version": manifest.version, "type": manifest.type,
                 "runtime": manifest.runtime, "files": packed.files, "sizeBytes": packed.size}
        if current().output == "table":
            current().err.print(f"{manifest.name} {manifest.version} ({manifest.type}, {manifest.runtime}) is "
                                f"valid: {len(packed.files)} files, {human_bytes(packed.size)} zipped",
                                markup=False)
            show_text("".join(f"{name}\n" for name in packed.files))
        else:
            show(value, "bundle")
    finally:
        packed.path.unlink(missing_ok=True)


@app.command("list")
def list_custom_bots(
    name: Annotated[str, typer.Option(help="Only the versions of this custom bot.")] = "",
    page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False,
) -> None:
    """Your custom-bot versions, newest first."""
    client = current().client
    items, token = collect(lambda t: client.list_custom_bots(name=name, page_size=page_size, page_token=t),
                           "custom_bots", all_pages=all_pages, page_token=page_token)
    show_list(items, "custom_bot", next_page_token=token)


@app.command()
def get(
    custom_bot_id: CustomBotId,
    readme: Annotated[bool, typer.Option("--readme", help="Print its README instead.")] = False,
) -> None:
    """One version: manifest, review, archive size and checksum (--readme: its README)."""
    custom_bot = current().client.get_custom_bot(custom_bot_id)
    if readme:
        show_text(custom_bot.readme.rstrip("\n") + "\n")
    else:
        show(custom_bot, "custom_bot")


@app.command()
def download(
    custom_bot_id: CustomBotId,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the zip (default: "
                                                                 "NAME-VERSION.zip here).")] = None,
) -> None:
    """Download a version's zip (yours only). An existing file is replaced only once every byte arrived."""
    client = current().client
    custom_bot = client.get_custom_bot(custom_bot_id)
    target = out or Path(f"{custom_bot.name}-{custom_bot.version}.zip")
    size = download_to(target, client.download_custom_bot_archive(custom_bot_id),
                       total=custom_bot.archive.size_bytes or None, label="downloading")
    if current().output == "table":
        current().err.print(f"Wrote {target} ({human_bytes(size)})", markup=False)
    else:
        show({"path": str(target), "sizeBytes": size, "sha256": custom_bot.archive.sha256}, "download")


@app.command("watch")
def watch_custom_bot(custom_bot_id: CustomBotId) -> None:
    """Print each change of the version's review state until it is approved or declined. Ctrl-C stops."""
    watch(current().client.watch_custom_bot(custom_bot_id), "custom_bot", state_line)


@app.command()
def review(
    custom_bot_id: CustomBotId,
    approve: Annotated[bool, typer.Option("--approve", help="Approve the version.")] = False,
    decline: Annotated[bool, typer.Option("--decline", help="Decline the version.")] = False,
    reasons: Annotated[list[str] | None, typer.Option("--reason", help="Why (repeatable; shown to the owner).")]
    = None,
) -> None:
    """Admins: approve or decline a version awaiting human review."""
    if approve == decline:
        raise CliError("give exactly one of --approve or --decline", USAGE)
    reviewed = current().client.review_custom_bot(custom_bot_id, approve=approve, reasons=reasons or [])
    show(reviewed, "custom_bot")


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="custom-bots", rich_help_panel="Resources")

