"""Conventions a reviewer would otherwise have to remember."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# Any use of the environment but setting one variable (`os.environ[NAME] = value`, which
# server/metrics.py does for prometheus-client, a library configured that way).
_READS_ENVIRONMENT = re.compile(r"os\.getenv|os\.environ(?!\[[^\]]+\] = )")


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("api", "server", "storage", "index")
        for path in (REPO / package).rglob("*.py")
        if _READS_ENVIRONMENT.search(path.read_text())
    ]
    assert offenders == [], "settings come from server/settings.py only"
    assert _READS_ENVIRONMENT.search('x = os.environ.get("A")')
    assert _READS_ENVIRONMENT.search('env = {**os.environ, "A": "1"}')
    assert not _READS_ENVIRONMENT.search('os.environ["A"] = "1"')


def test_modules_stay_readable_in_one_sitting() -> None:
    too_long = {
        str(path.relative_to(REPO)): n
        for package in ("api", "server", "storage", "index")
        for path in (REPO / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 800
    }
    assert too_long == {}
