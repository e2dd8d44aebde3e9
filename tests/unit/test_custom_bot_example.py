"""The shipped example bot passes the upload checks, zipped as its README says."""

from __future__ import annotations

import shutil
from pathlib import Path

from the0.server.custom_bots.archive import check_archive

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sma-crossover"


def test_the_example_bot_is_a_valid_upload(tmp_path: Path) -> None:
    archive = shutil.make_archive(str(tmp_path / "sma-crossover"), "zip", EXAMPLE)
    checked = check_archive(Path(archive))
    assert (checked.manifest.name, checked.manifest.type, checked.manifest.runtime) == (
        "sma-crossover", "scheduled", "python3.11")
    assert checked.backtest_schema is not None and checked.bot_schema["required"] == ["symbol"]
