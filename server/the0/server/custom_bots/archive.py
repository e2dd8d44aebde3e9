"""Checks of an uploaded zip, before anything is stored. Pure functions over a file.

Nothing in the archive is trusted: not its names (zip slip, absolute paths,
backslashes, links), not the sizes its headers claim (reads are bounded by the
bytes actually decompressed), not its compression (zip bombs). Every problem
found is reported at once, as field violations.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from the0.server.custom_bots.manifest import (
    CheckedManifest,
    FileTooLarge,
    ManifestInvalid,
    UnreadableFile,
    check_manifest,
)
from the0.server.errors import FieldViolation

MANIFEST_NAME = "bot-config.yaml"
MAX_MANIFEST_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_entries: int = 1000
    max_unpacked_bytes: int = 50 * 1024 * 1024
    # Entries bigger than this may not compress better than max_ratio:1.
    ratio_min_bytes: int = 1024 * 1024
    max_ratio: int = 100


DEFAULT_LIMITS = ArchiveLimits()


class ArchiveInvalid(Exception):
    """The upload is not an acceptable zip (ErrorReason ARCHIVE_INVALID)."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


def check_archive(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> CheckedManifest:
    """Check the zip at ``path`` and its manifest; raise ArchiveInvalid or ManifestInvalid."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ArchiveInvalid([FieldViolation("archive", "is not a valid zip file")]) from None
    with archive:
        infos = archive.infolist()
        _check_entries(infos, limits)
        files = {info.filename for info in infos if not info.is_dir()}
        reader = _BoundedReader(archive, limits)
        if MANIFEST_NAME not in files:
            nested = sorted(f for f in files if f.endswith("/" + MANIFEST_NAME))
            hint = (
                f" (found {nested[0]}: zip the folder's contents, not the folder)" if nested else ""
            )
            raise ManifestInvalid([FieldViolation("manifest", f"{MANIFEST_NAME} is missing at the archive root{hint}")])
        try:
            raw = reader(MANIFEST_NAME, MAX_MANIFEST_BYTES)
        except FileTooLarge:
            raise ManifestInvalid(
                [FieldViolation("manifest", f"{MANIFEST_NAME} must be at most {MAX_MANIFEST_BYTES // 1024} KiB")]
            ) from None
        except UnreadableFile:
            raise ArchiveInvalid([FieldViolation("archive", f"{MANIFEST_NAME} cannot be decompressed")]) from None
        try:
            doc = yaml.safe_load(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ManifestInvalid([FieldViolation("manifest", f"{MANIFEST_NAME} must be UTF-8 text")]) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ManifestInvalid([FieldViolation("manifest", f"{MANIFEST_NAME} is not valid YAML{where}")]) from None
        except RecursionError:
            raise ManifestInvalid([FieldViolation("manifest", f"{MANIFEST_NAME} is nested too deeply")]) from None
        return check_manifest(doc, files, reader)


def _check_entries(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    problems: list[FieldViolation] = []

    def bad(description: str) -> None:
        if len(problems) < 50:  # enough to fix a bad archive; never an unbounded reply
            problems.append(FieldViolation("archive", description))

    if not infos:
        raise ArchiveInvalid([FieldViolation("archive", "is empty")])
    if len(infos) > limits.max_entries:
        bad(f"has {len(infos)} entries, at most {limits.max_entries} are allowed")
    unpacked = sum(info.file_size for info in infos)
    if unpacked > limits.max_unpacked_bytes:
        bad(f"unpacks to {unpacked} bytes, at most {limits.max_unpacked_bytes // (1024 * 1024)} MB are allowed")
    seen: set[str] = set()
    for info in infos[: limits.max_entries]:
        name = info.filename
        shown = name[:200]
        if name.startswith("/") or _DRIVE.match(name):
            bad(f"{shown!r} is an absolute path")
        if "\\" in name:
            bad(f"{shown!r} contains a backslash")
        if ".." in name.split("/"):
            bad(f"{shown!r} points outside the archive ('..')")
        if "\0" in name:
            bad(f"{shown!r} contains a NUL character")
        if stat.S_ISLNK(info.external_attr >> 16):
            bad(f"{shown!r} is a symbolic link")
        if info.flag_bits & 0x1:
            bad(f"{shown!r} is encrypted")
        if name in seen:
            bad(f"{shown!r} appears twice")
        seen.add(name)
        if info.file_size > limits.ratio_min_bytes and (
            info.compress_size == 0 or info.file_size / info.compress_size > limits.max_ratio
        ):
            bad(f"{shown!r} is compressed more than {limits.max_ratio}:1 (a zip bomb?)")
    if problems:
        raise ArchiveInvalid(problems)


class _BoundedReader:
    """Reads members, counting the bytes really decompressed (headers may lie)."""

    def __init__(self, archive: zipfile.ZipFile, limits: ArchiveLimits) -> None:
        self._archive = archive
        self._budget = limits.max_unpacked_bytes

    def __call__(self, name: str, max_bytes: int) -> bytes:
        limit = min(max_bytes, self._budget)
        parts: list[bytes] = []
        total = 0
        try:
            with self._archive.open(name) as member:
                while chunk := member.read(min(_READ_CHUNK, limit + 1 - total)):
                    total += len(chunk)
                    parts.append(chunk)
                    if total > limit:
                        raise FileTooLarge(name)
        except FileTooLarge:
            raise
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError, EOFError,
                ValueError, KeyError) as error:
            raise UnreadableFile(name) from error
        self._budget -= total
        return b"".join(parts)
