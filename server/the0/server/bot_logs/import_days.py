"""Import the original platform's day files: ``python -m the0.server.bot_logs.import_days <dir>``.

``<dir>/<botId>/<YYYYMMDD>.log``, lines ``[timestamp] text``. Lines of bots that do
not exist here are skipped; importing twice adds nothing (the lines' keys repeat).
The database comes from the server's own settings (THE0_DATABASE_URL ...).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.bot_logs import repository
from the0.server.bot_logs.lines import LogLine, parse_day_line
from the0.server.db.engine import create_engine, session_factory
from the0.server.settings import Settings

_DAY_FILE = re.compile(r"^(\d{8})\.log$")
_BATCH = 1000


async def import_directory(sessions: async_sessionmaker[AsyncSession], root: Path) -> dict[str, int]:
    """Lines read and lines of unknown bots skipped."""
    counts = {"files": 0, "lines": 0, "skipped_lines": 0}
    for bot_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        bot_id = bot_dir.name
        async with sessions() as session:
            known = bool(await repository.existing_bots(session, {bot_id}))
        for day_file in sorted(bot_dir.iterdir()):
            match = _DAY_FILE.match(day_file.name)
            if match is None:
                continue
            counts["files"] += 1
            day = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
            batch: list[LogLine] = []
            with day_file.open(encoding="utf-8", errors="replace") as lines:
                for number, raw in enumerate(lines, start=1):
                    if not raw.strip():
                        continue
                    counts["lines" if known else "skipped_lines"] += 1
                    if known:
                        batch.append(parse_day_line(bot_id, raw, line_number=number, day=day))
                    if len(batch) >= _BATCH:
                        await _store(sessions, batch)
                        batch = []
            await _store(sessions, batch)
    return counts


async def _store(sessions: async_sessionmaker[AsyncSession], batch: list[LogLine]) -> None:
    if batch:
        async with sessions() as session, session.begin():
            await repository.insert_lines(session, batch)


async def _main(root: Path) -> int:
    settings = Settings.from_env(os.environ)
    engine = create_engine(settings.effective_database_url)
    try:
        counts = await import_directory(session_factory(engine), root)
    finally:
        await engine.dispose()
    print(f"imported {counts['lines']} lines from {counts['files']} files; "
          f"{counts['skipped_lines']} lines of unknown bots skipped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m the0.server.bot_logs.import_days <logs directory>", file=sys.stderr)
        return 2
    return asyncio.run(_main(Path(args[0])))


if __name__ == "__main__":
    raise SystemExit(main())
