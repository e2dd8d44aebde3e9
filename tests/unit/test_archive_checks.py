"""Archive and manifest checks on crafted zips (pure functions, no services).

``bot_zip`` builds a valid sample bot; the other custom-bot tests import it.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from the0.server.custom_bots.archive import ArchiveInvalid, ArchiveLimits, check_archive
from the0.server.custom_bots.manifest import ManifestInvalid
from the0.server.custom_bots.semver import SemVer

README = "# SMA crossover\n\nBuys when the fast average crosses above the slow one, sells on the reverse.\n"
BOT_SCHEMA = {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}


def manifest(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "sma-crossover",
        "description": "A simple moving-average crossover bot.",
        "version": "1.0.0",
        "author": "the0 tests",
        "type": "scheduled",
        "runtime": "python3.11",
        "entrypoints": {"bot": "main.py", "backtest": "backtest.py"},
        "schema": {"bot": "bot-schema.json", "backtest": "backtest-schema.json"},
        "readme": "README.md",
        "metadata": {"categories": ["trend"], "instruments": ["BTC/USDT"], "exchanges": ["binance"],
                     "tags": ["sma"]},
    }
    for key, value in overrides.items():
        if value is _DELETE:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


_DELETE = object()
DELETE = _DELETE


def bot_files(**manifest_overrides: Any) -> dict[str, bytes]:
    return {
        "bot-config.yaml": yaml.safe_dump(manifest(**manifest_overrides)).encode(),
        "main.py": b"def main(config):\n    return {'status': 'ok'}\n",
        "backtest.py": b"def main(config):\n    return {'metrics': {}}\n",
        "bot-schema.json": json.dumps(BOT_SCHEMA).encode(),
        "backtest-schema.json": json.dumps({"type": "object"}).encode(),
        "README.md": README.encode(),
    }


def make_zip(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def bot_zip(*, version: str = "1.0.0", name: str = "sma-crossover", extra: dict[str, bytes] | None = None,
            **manifest_overrides: Any) -> bytes:
    files = bot_files(version=version, name=name, **manifest_overrides)
    files.update(extra or {})
    return make_zip(files)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return path


def _fields(error: ArchiveInvalid | ManifestInvalid) -> list[str]:
    return [v.field for v in error.violations]


def test_a_valid_bot_passes(tmp_path: Path) -> None:
    checked = check_archive(_write(tmp_path, bot_zip()))
    assert checked.manifest.name == "sma-crossover"
    assert checked.manifest.entrypoint_backtest == "backtest.py"
    assert checked.bot_schema == BOT_SCHEMA
    assert checked.readme_text == README
    assert checked.manifest.to_json()["metadata"]["tags"] == ["sma"]


def test_a_bot_without_backtest_passes(tmp_path: Path) -> None:
    data = bot_zip(entrypoints={"bot": "./main.py"}, schema={"bot": "bot-schema.json"})
    checked = check_archive(_write(tmp_path, data))
    assert checked.backtest_schema is None and checked.manifest.entrypoint_bot == "main.py"


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in bot_files().items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("evil-link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _bomb_zip() -> bytes:
    files = bot_files()
    files["data.bin"] = b"\0" * (5 * 1024 * 1024)  # 5 MB of zeros deflate ~1000:1
    return make_zip(files)


def _too_big_unpacked() -> bytes:
    files = bot_files()
    # Many compressible-but-not-bomb entries: each under the ratio check size.
    for i in range(60):
        files[f"blob{i}.bin"] = b"x" * (1024 * 1024 - 1)
    return make_zip(files)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"this is not a zip", "not a valid zip"),
        (make_zip({}), "empty"),
        (make_zip({**bot_files(), "../evil.py": b"x"}), "outside the archive"),
        (make_zip({**bot_files(), "a/../../evil.py": b"x"}), "outside the archive"),
        (make_zip({**bot_files(), "/etc/cron.d/evil": b"x"}), "absolute path"),
        (make_zip({**bot_files(), "C:/evil": b"x"}), "absolute path"),
        (make_zip({**bot_files(), "dir\\evil.py": b"x"}), "backslash"),
        (_symlink_zip(), "symbolic link"),
        (_bomb_zip(), "zip bomb"),
        (make_zip({**bot_files(), **{f"f{i}.txt": b"" for i in range(1001)}}), "entries"),
        (_too_big_unpacked(), "unpacks to"),
    ],
    ids=["not-a-zip", "empty", "zip-slip", "nested-zip-slip", "absolute", "drive-letter", "backslash",
         "symlink", "bomb", "too-many-entries", "too-big-unpacked"],
)
def test_bad_archives_are_refused(tmp_path: Path, data: bytes, needle: str) -> None:
    with pytest.raises(ArchiveInvalid) as caught:
        check_archive(_write(tmp_path, data))
    assert any(needle in v.description for v in caught.value.violations), caught.value.violations
    assert set(_fields(caught.value)) == {"archive"}


def test_headers_that_lie_about_sizes_are_bounded(tmp_path: Path) -> None:
    """A manifest whose header claims a tiny size still cannot be read past the limit."""
    files = bot_files()
    files["bot-config.yaml"] = files["bot-config.yaml"] + b"#" * (200 * 1024)
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert "at most" in caught.value.violations[0].description


def test_many_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = make_zip({**bot_files(), "../a": b"x", "/b": b"y", "c\\d": b"z"})
    with pytest.raises(ArchiveInvalid) as caught:
        check_archive(_write(tmp_path, data))
    assert len(caught.value.violations) == 3


def test_missing_manifest(tmp_path: Path) -> None:
    files = bot_files()
    del files["bot-config.yaml"]
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert _fields(caught.value) == ["manifest"]


def test_manifest_inside_a_folder_gets_a_hint(tmp_path: Path) -> None:
    files = {f"sma-crossover/{name}": data for name, data in bot_files().items()}
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert "not the folder" in caught.value.violations[0].description


@pytest.mark.parametrize("raw", [b"name: [unclosed", b"- just\n- a list\n", b"\xff\xfe bad utf8", b"!!python/object:os.system x"])
def test_malformed_manifest(tmp_path: Path, raw: bytes) -> None:
    files = bot_files()
    files["bot-config.yaml"] = raw
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert _fields(caught.value) == ["manifest"]


RULES = [
    ({"name": "No_Caps"}, {}, "manifest.name"),
    ({"name": "ab"}, {}, "manifest.name"),
    ({"name": DELETE}, {}, "manifest.name"),
    ({"version": "1.0"}, {}, "manifest.version"),
    ({"version": "v1.0.0"}, {}, "manifest.version"),
    ({"version": "01.0.0"}, {}, "manifest.version"),
    ({"description": "x" * 501}, {}, "manifest.description"),
    ({"author": "x" * 101}, {}, "manifest.author"),
    ({"type": "cron"}, {}, "manifest.type"),
    ({"runtime": "python2"}, {}, "manifest.runtime"),
    ({"runtime": "nodejs20"}, {}, "manifest.runtime"),  # scheduled needs python3.11
    ({"entrypoints": {"backtest": "backtest.py"}}, {}, "manifest.entrypoints.bot"),
    ({"entrypoints": {"bot": "missing.py", "backtest": "backtest.py"}}, {}, "manifest.entrypoints.bot"),
    ({"entrypoints": {"bot": "main.py", "backtest": "nope.py"}}, {}, "manifest.entrypoints.backtest"),
    ({"schema": {"bot": "bot-schema.json"}}, {}, "manifest.schema.backtest"),
    ({"schema": {"backtest": "backtest-schema.json"}}, {}, "manifest.schema.bot"),
    ({}, {"bot-schema.json": b"{not json"}, "manifest.schema.bot"),
    ({}, {"bot-schema.json": b'{"type": "not-a-type"}'}, "manifest.schema.bot"),
    ({}, {"backtest-schema.json": b'{"minimum": "zero"}'}, "manifest.schema.backtest"),
    ({}, {"bot-schema.json": b"[1, 2]"}, "manifest.schema.bot"),
    ({"entrypoints": {"bot": "main.py"}, "schema": {"bot": "bot-schema.json", "backtest": "backtest-schema.json"}},
     {}, "manifest.schema.backtest"),
    ({"readme": "NOPE.md"}, {}, "manifest.readme"),
    ({}, {"README.md": b"too short"}, "manifest.readme"),
    ({}, {"README.md": b"x" * 10_001}, "manifest.readme"),
    ({"metadata": {"tags": [f"t{i}" for i in range(21)]}}, {}, "manifest.metadata.tags"),
    ({"metadata": {"tags": ["x" * 51]}}, {}, "manifest.metadata.tags"),
    ({"metadata": {"colours": ["red"]}}, {}, "manifest.metadata.colours"),
]


@pytest.mark.parametrize(("overrides", "replaced", "field"), RULES,
                         ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(RULES)])
def test_each_manifest_rule(tmp_path: Path, overrides: dict[str, Any], replaced: dict[str, bytes],
                            field: str) -> None:
    files = bot_files(**overrides)
    files.update(replaced)
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert field in _fields(caught.value), caught.value.violations


def test_every_manifest_problem_at_once(tmp_path: Path) -> None:
    files = bot_files(name="X", version="one", type="cron", readme="nope.md",
                      entrypoints={"bot": "missing.py"}, schema={"bot": "missing.json"})
    with pytest.raises(ManifestInvalid) as caught:
        check_archive(_write(tmp_path, make_zip(files)))
    assert set(_fields(caught.value)) >= {"manifest.name", "manifest.version", "manifest.type",
                                          "manifest.readme", "manifest.entrypoints.bot", "manifest.schema.bot"}


def test_archive_limits_are_configurable(tmp_path: Path) -> None:
    with pytest.raises(ArchiveInvalid):
        check_archive(_write(tmp_path, bot_zip()), ArchiveLimits(max_entries=3))


@pytest.mark.parametrize(
    ("lower", "higher"),
    [("1.0.0", "1.0.1"), ("1.0.9", "1.1.0"), ("1.9.0", "2.0.0"), ("1.0.0-alpha", "1.0.0"),
     ("1.0.0-alpha", "1.0.0-alpha.1"), ("1.0.0-alpha.1", "1.0.0-alpha.beta"), ("1.0.0-beta.2", "1.0.0-beta.11"),
     ("1.0.0-rc.1", "1.0.0"), ("1.10.0", "1.11.0"), ("2.0.0", "10.0.0")],
)
def test_semver_precedence(lower: str, higher: str) -> None:
    assert SemVer.parse(lower) < SemVer.parse(higher)
    assert not SemVer.parse(higher) < SemVer.parse(lower)


def test_semver_ignores_build_metadata() -> None:
    assert SemVer.parse("1.0.0+build.1") == SemVer.parse("1.0.0")
