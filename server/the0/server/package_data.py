"""Files the server reads that are not Python modules: the Alembic migrations, the Envoy descriptor set,
and what Envoy serves beside the API (the OpenAPI document, the docs page and its npm assets).

In an installed wheel they are package data of ``the0.server`` (``data/``, put there by the wheel's
``force-include``), found with ``importlib.resources``, so ``the0-server migrate`` works from any
directory. In a source checkout (``pip install -e .``) they stay where the repository keeps them,
``migrations/`` and ``gen/the0.binpb`` at the top level; the package data directory does not exist there.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

# server/the0/server/package_data.py -> the repository root, in a checkout only.
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]
_IN_CHECKOUT = {"migrations": "migrations", "the0.binpb": "gen/the0.binpb", "openapi": "gen/openapi",
                "docs": "envoy/docs"}


def data_path(name: str) -> Path:
    """``migrations``, ``openapi``, ``docs`` (directories) or ``the0.binpb``, from the installed package or
    the checkout."""
    packaged = files("the0.server").joinpath("data", name)
    if packaged.is_dir() or packaged.is_file():
        # A wheel is installed unpacked, so this is a real path; as_file says so if ever it is not.
        with as_file(packaged) as path:
            return Path(path)
    in_checkout = _CHECKOUT_ROOT / _IN_CHECKOUT[name]
    if in_checkout.exists():
        return in_checkout
    raise FileNotFoundError(f"the0.server package data {name!r} is missing: reinstall the0-api")


def migrations_dir() -> Path:
    return data_path("migrations")


def descriptor_set_path() -> Path:
    return data_path("the0.binpb")


def openapi_dir() -> Path:
    return data_path("openapi")


def docs_dir() -> Path:
    """The docs page (index.html) with the npm assets it loads, laid out as envoy/docs of a checkout."""
    return data_path("docs")
