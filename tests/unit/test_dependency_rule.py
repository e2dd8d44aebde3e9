"""The one dependency rule between packages, as import-linter contracts in pyproject.toml.

bots and backtests stand side by side above custom_bots, which stands above
identity; a domain reaches another only through its published interface
(``custom_bots.catalog``/``config_validation``, ``identity.principal``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_no_domain_imports_another_domains_internals() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, f"import contracts broken:\n{result.stdout}\n{result.stderr}"
