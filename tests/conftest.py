from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import DEBIAN_DIR, app_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "data") as test_client:
        yield test_client


@pytest.fixture
def debian_dir() -> Path:
    if not (DEBIAN_DIR / "vectors.f16.npy").exists():
        pytest.skip(f"the Debian data set is not at {DEBIAN_DIR} (see its README)")
    return DEBIAN_DIR
