"""The README's flows, run in order as written, against `make run` (the dev stack) on free ports.

The blocks marked ``<!-- run in order by tests/e2e/test_readme.py -->`` run in one person's shell: the
REST block with bash, the CLI block in a pseudo-terminal (the password prompt is answered as a person
would). Only the ports change (the dev stack's defaults may be taken on a test machine).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect

from tests.e2e.test_devstack import start_devstack

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- run in order by tests/e2e/test_readme.py -->"
PASSWORD = "correct horse battery"


def marked_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(re.escape(MARK) + r"\n```sh\n(.*?)\n```", text, flags=re.DOTALL)


async def test_the_readme_flows_run_in_order(tmp_path):
    rest, cli = marked_blocks()
    process, http_port, grpc_port, data_dir, _ = await start_devstack(tmp_path, {})
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THE0_")} | {
        "HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "THE0_API_URL": f"127.0.0.1:{grpc_port}", "THE0_DATA_DIR": str(data_dir),
        "THE0_GRPC_PORT": str(grpc_port), "THE0_HTTP_PORT": str(http_port), "TERM": "xterm",
    }
    try:
        script = "set -euo pipefail\n" + rest.replace("localhost:8080", f"localhost:{http_port}")
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", script], env=env, cwd=ROOT,
                                       capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert '"secret":"the0_' in done.stdout.replace(" ", "")
        # curl succeeds on an error reply too: every answer of the flow is a success, none a google.rpc.Status.
        assert '"reason":' not in done.stdout, done.stdout

        def person() -> tuple[int | None, str]:
            shell = pexpect.spawn("bash", ["-c", "set -euo pipefail\n" + cli], env=env, cwd=str(ROOT),
                                  encoding="utf-8", timeout=60, dimensions=(50, 200))
            shell.expect("Password: ")
            shell.sendline(PASSWORD)
            shell.expect(pexpect.EOF, timeout=120)
            shell.close()
            return shell.exitstatus, shell.before

        code, seen = await asyncio.to_thread(person)
        assert code == 0, seen
        assert "Traceback" not in seen and "the0: " not in seen, seen
        assert "approved" in seen and "completed" in seen and "Deleted bot my-sma" in seen, seen
        assert "Logged out of profile default" in seen
    finally:
        process.terminate()
        async with asyncio.timeout(20):
            await process.wait()
