"""Conventions a reviewer would otherwise have to remember."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("api", "server", "storage", "index")
        for path in (REPO / package).rglob("*.py")
        if "os.environ" in path.read_text() or "os.getenv" in path.read_text()
    ]
    assert offenders == [], "settings come from server/settings.py only"


def test_modules_stay_readable_in_one_sitting() -> None:
    too_long = {
        str(path.relative_to(REPO)): n
        for package in ("api", "server", "storage", "index")
        for path in (REPO / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 800
    }
    assert too_long == {}
