"""The rules of ``bot-config.yaml`` (DESIGN.md §3), checked against the archive's files.

Pure functions: ``check_manifest`` gets the parsed YAML, the archive's file
names and a bounded reader, and returns the manifest with the files it names
(readme text, JSON Schemas), or raises ``ManifestInvalid`` listing EVERY
problem, one field violation each (``manifest.version``,
``manifest.entrypoints.bot``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import SchemaError

from the0.server.custom_bots import schema_safety
from the0.server.custom_bots.semver import SemVer
from the0.server.errors import FieldViolation

NAME_PATTERN = re.compile(r"^[a-z0-9-]{3,50}$")
TYPES = ("scheduled", "realtime", "event")
RUNTIMES = ("python3.11", "nodejs20")
METADATA_LISTS = ("categories", "instruments", "exchanges", "tags")
MAX_DESCRIPTION = 500
MAX_AUTHOR = 100
MAX_VERSION = 64
README_MIN, README_MAX = 50, 10_000
METADATA_MAX_ITEMS, METADATA_MAX_CHARS = 20, 50
MAX_SCHEMA_BYTES = 1024 * 1024
MAX_README_BYTES = README_MAX * 4  # UTF-8: at most 4 bytes a character

# read(path, max_bytes) -> bytes; raises FileTooLarge or UnreadableFile.
Reader = Callable[[str, int], bytes]


class FileTooLarge(Exception):
    pass


class UnreadableFile(Exception):
    pass


class ManifestInvalid(Exception):
    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    description: str
    author: str
    type: str
    runtime: str
    entrypoint_bot: str
    entrypoint_backtest: str | None
    schema_bot: str
    schema_backtest: str | None
    readme: str
    metadata: Mapping[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest as stored and as sent in ``custom-bot.submitted``: the YAML's own keys."""
        entrypoints = {"bot": self.entrypoint_bot}
        schema = {"bot": self.schema_bot}
        if self.entrypoint_backtest:
            entrypoints["backtest"] = self.entrypoint_backtest
        if self.schema_backtest:
            schema["backtest"] = self.schema_backtest
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "author": self.author,
            "type": self.type,
            "runtime": self.runtime,
            "entrypoints": entrypoints,
            "schema": schema,
            "readme": self.readme,
            "metadata": {key: list(values) for key, values in self.metadata.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            name=data["name"],
            version=data["version"],
            description=data.get("description", ""),
            author=data.get("author", ""),
            type=data["type"],
            runtime=data["runtime"],
            entrypoint_bot=data["entrypoints"]["bot"],
            entrypoint_backtest=data["entrypoints"].get("backtest"),
            schema_bot=data["schema"]["bot"],
            schema_backtest=data["schema"].get("backtest"),
            readme=data["readme"],
            metadata={k: list(v) for k, v in (data.get("metadata") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class CheckedManifest:
    manifest: Manifest
    readme_text: str
    bot_schema: dict[str, Any]
    backtest_schema: dict[str, Any] | None


def normalise_path(path: str) -> str:
    """Manifest paths are relative to the archive root; ``./main.py`` means ``main.py``."""
    while path.startswith("./"):
        path = path[2:]
    return path


def check_manifest(doc: object, files: set[str], read: Reader) -> CheckedManifest:
    problems: list[FieldViolation] = []

    def bad(path: str, description: str) -> None:
        problems.append(FieldViolation(f"manifest.{path}" if path else "manifest", description))

    if not isinstance(doc, dict):
        raise ManifestInvalid([FieldViolation("manifest", "bot-config.yaml must be a mapping of fields")])

    def text(key: str, *, required: bool = True, max_len: int | None = None) -> str | None:
        value = doc.get(key)
        if value is None or value == "":
            if required:
                bad(key, "is required")
            return None
        if not isinstance(value, str):
            bad(key, f"must be a string, got {_yaml_type(value)}")
            return None
        if max_len is not None and len(value) > max_len:
            bad(key, f"must be at most {max_len} characters, got {len(value)}")
            return None
        return value

    name = text("name")
    if name is not None and not NAME_PATTERN.match(name):
        bad("name", "must be 3 to 50 characters of lower-case letters, digits and '-'")
    version = text("version", max_len=MAX_VERSION)
    if version is not None and not SemVer.is_valid(version):
        bad("version", f"must be a semantic version like 1.2.3, got {version!r}")
    description = text("description", max_len=MAX_DESCRIPTION)
    author = text("author", max_len=MAX_AUTHOR)
    bot_type = text("type")
    if bot_type is not None and bot_type not in TYPES:
        bad("type", f"must be one of {', '.join(TYPES)}, got {bot_type!r}")
    runtime = text("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        bad("runtime", f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    elif runtime is not None and bot_type == "scheduled" and runtime != "python3.11":
        bad("runtime", "scheduled bots must use python3.11")

    def section(key: str) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            bad(key, "is required")
            return {}
        if not isinstance(value, dict):
            bad(key, f"must be a mapping, got {_yaml_type(value)}")
            return {}
        return value

    def file_path(parent: str, mapping: Mapping[str, Any], key: str, *, required: bool) -> str | None:
        value = mapping.get(key)
        where = f"{parent}.{key}" if parent else key
        if value is None or value == "":
            if required:
                bad(where, "is required")
            return None
        if not isinstance(value, str):
            bad(where, f"must be a path in the archive, got {_yaml_type(value)}")
            return None
        path = normalise_path(value)
        if path not in files:
            bad(where, f"{value!r} is not a file in the archive")
            return None
        return path

    entrypoints = section("entrypoints")
    entry_bot = file_path("entrypoints", entrypoints, "bot", required=bool(entrypoints) or "entrypoints" in doc)
    entry_backtest = file_path("entrypoints", entrypoints, "backtest", required=False)
    schemas = section("schema")
    schema_bot_path = file_path("schema", schemas, "bot", required=bool(schemas) or "schema" in doc)
    has_backtest = bool(entrypoints.get("backtest"))
    schema_backtest_path = file_path("schema", schemas, "backtest", required=has_backtest)
    if schemas.get("backtest") and not has_backtest:
        bad("schema.backtest", "is set but entrypoints.backtest is not")
        schema_backtest_path = None
    bot_schema = _schema("schema.bot", schema_bot_path, read, bad)
    backtest_schema = _schema("schema.backtest", schema_backtest_path, read, bad)

    readme_path = file_path("", doc, "readme", required=True)
    readme_text = None
    if readme_path is not None:
        try:
            readme_text = read(readme_path, MAX_README_BYTES).decode("utf-8")
        except FileTooLarge:
            bad("readme", f"must be at most {README_MAX} characters")
        except (UnreadableFile, UnicodeDecodeError):
            bad("readme", "must be a UTF-8 text file")
        else:
            length = len(readme_text.strip())
            if not README_MIN <= length <= README_MAX:
                bad("readme", f"must be {README_MIN} to {README_MAX} characters, got {length}")

    metadata: dict[str, list[str]] = {}
    raw_metadata = doc.get("metadata")
    if raw_metadata is not None and not isinstance(raw_metadata, dict):
        bad("metadata", f"must be a mapping, got {_yaml_type(raw_metadata)}")
    elif isinstance(raw_metadata, dict):
        for key, values in raw_metadata.items():
            where = f"metadata.{key}"
            if key not in METADATA_LISTS:
                bad(where, f"is not one of {', '.join(METADATA_LISTS)}")
                continue
            if values is None:
                continue
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                bad(where, "must be a list of strings")
            elif len(values) > METADATA_MAX_ITEMS:
                bad(where, f"must have at most {METADATA_MAX_ITEMS} items, got {len(values)}")
            elif any(len(v) > METADATA_MAX_CHARS or not v for v in values):
                bad(where, f"items must be 1 to {METADATA_MAX_CHARS} characters")
            else:
                metadata[key] = list(values)

    if problems:
        raise ManifestInvalid(problems)
    assert name and version and description and author and bot_type and runtime
    assert entry_bot and schema_bot_path and readme_path and readme_text is not None and bot_schema is not None
    return CheckedManifest(
        manifest=Manifest(
            name=name,
            version=version,
            description=description,
            author=author,
            type=bot_type,
            runtime=runtime,
            entrypoint_bot=entry_bot,
            entrypoint_backtest=entry_backtest,
            schema_bot=schema_bot_path,
            schema_backtest=schema_backtest_path,
            readme=readme_path,
            metadata=metadata,
        ),
        readme_text=readme_text,
        bot_schema=bot_schema,
        backtest_schema=backtest_schema,
    )


def _schema(
    where: str, path: str | None, read: Reader, bad: Callable[[str, str], None]
) -> dict[str, Any] | None:
    if path is None:
        return None
    where = where.removeprefix("manifest.")
    try:
        schema = json.loads(read(path, MAX_SCHEMA_BYTES))
    except FileTooLarge:
        bad(where, f"{path} is larger than {MAX_SCHEMA_BYTES // 1024} KiB")
        return None
    except UnreadableFile:
        bad(where, f"{path} cannot be read from the archive")
        return None
    except (ValueError, RecursionError):
        bad(where, f"{path} is not valid JSON")
        return None
    if not isinstance(schema, dict):
        bad(where, f"{path} must hold a JSON Schema object")
        return None
    # The safety rules first: they bound the document that the meta-schema check then walks.
    unsafe = schema_safety.problems(schema)
    for problem in unsafe:
        bad(where, f"{path} {problem.describe()}")
    if unsafe:
        return None
    try:
        schema_safety.check_schema(schema)
    except SchemaError as error:
        location = "/".join(str(p) for p in error.path) or "(root)"
        bad(where, f"{path} is not a valid JSON Schema at {location}: {error.message[:200]}")
        return None
    except RecursionError:
        bad(where, f"{path} is nested too deeply")
        return None
    return schema


def _yaml_type(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )
