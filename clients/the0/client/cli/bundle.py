"""A custom bot's folder as the zip the API takes, checked here by the server's own rules first.

Which files go in: every regular file under the folder, except what ``.the0ignore`` (gitignore rules,
pathspec) or the defaults below leave out; a ``!pattern`` in ``.the0ignore`` brings a default back.
Symbolic links are skipped (the server refuses them).

The zip is then checked with ``the0.server.custom_bots.archive.check_archive``, the function the server
runs on every upload (pure: it needs the zip, PyYAML and jsonschema, no database or network), so a bad
``bot-config.yaml`` is reported with every problem before a byte is sent.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

from the0.client.cli.failures import USAGE, CliError
from the0.server.custom_bots.archive import MANIFEST_NAME, ArchiveInvalid, check_archive
from the0.server.custom_bots.manifest import CheckedManifest, ManifestInvalid

IGNORE_FILE = ".the0ignore"
# Never wanted in an upload: caches, VCS data, logs, tests, local secrets and environments.
DEFAULT_IGNORES = ("__pycache__/", ".git/", "*.log", "tests/", ".env", ".venv/", IGNORE_FILE)


@dataclass(frozen=True)
class Bundle:
    path: Path  # a temporary zip; the caller deletes it
    files: list[str]
    manifest: CheckedManifest

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def ignore_spec(folder: Path) -> pathspec.GitIgnoreSpec:
    lines = list(DEFAULT_IGNORES)
    ignore_file = folder / IGNORE_FILE
    if ignore_file.is_file():
        lines += ignore_file.read_text().splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def files_of(folder: Path) -> list[str]:
    """The folder's files that go into the zip, as sorted POSIX paths relative to it."""
    spec = ignore_spec(folder)
    chosen: list[str] = []
    for root, dirs, names in os.walk(folder):
        relative_root = Path(root).relative_to(folder)
        # Prune ignored folders (and never follow folder links) so a big .git or venv is not walked.
        dirs[:] = sorted(d for d in dirs if not (Path(root, d).is_symlink()
                                                or spec.match_file(f"{(relative_root / d).as_posix()}/")))
        for name in sorted(names):
            path = Path(root, name)
            relative = (relative_root / name).as_posix()
            if path.is_symlink() or not path.is_file() or spec.match_file(relative):
                continue
            chosen.append(relative)
    return sorted(chosen)


def pack_folder(folder: Path) -> Bundle:
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder", USAGE)
    if not (folder / MANIFEST_NAME).is_file():
        raise CliError(f"no {MANIFEST_NAME} in {folder}: run this in your bot's folder, or give its path "
                       "(docs/bots-and-backtests.md says what the file holds)", USAGE)
    files = files_of(folder)
    fd, name = tempfile.mkstemp(prefix="the0-bundle-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in files:
                archive.write(folder / relative, relative)
        return Bundle(path, files, check(path))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def check(path: Path) -> CheckedManifest:
    """The server's checks of an archive, run locally; every problem in one line."""
    try:
        return check_archive(path)
    except (ArchiveInvalid, ManifestInvalid) as error:
        problems = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
        raise CliError(f"{MANIFEST_NAME} or the files it names are not valid: {problems}", USAGE) from None
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}", USAGE) from None
