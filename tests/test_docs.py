"""The docs keep up with the code: every route, setting, error code, and the OpenAPI schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

from api.access import ROUTES
from api.app import create_app
from api.errors import STATUS_BY_CODE
from server.model import IndexSettings
from server.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _app_routes() -> list[tuple[str, str]]:
    """From the OpenAPI paths: `app.routes` nests included routers in newer FastAPI
    releases, where a walk over it silently found nothing."""
    paths = create_app(Settings()).openapi()["paths"]
    routes = [(method.upper(), path) for path, item in paths.items() for method in item]
    assert len(routes) > 20, f"too few routes found: {routes}"
    return routes


def test_every_route_has_a_row_in_the_scope_table_and_no_row_is_stale() -> None:
    routes = set(_app_routes())
    assert sorted(routes - set(ROUTES)) == [], "add them to api/access.py"
    assert sorted(set(ROUTES) - routes) == [], "rows for routes that do not exist"


def test_the_scope_table_in_security_md_is_the_one_the_code_enforces() -> None:
    text = (DOCS / "security.md").read_text()
    rows = re.findall(r"^\| `([A-Z]+) ([^`]+)` \| ([a-z ]+) \| ([a-z]*) ?\|$", text, flags=re.M)
    documented = {(method, path): (access, rate) for method, path, access, rate in rows}
    enforced = {key: (rule.access.value, rule.rate or "") for key, rule in ROUTES.items()}
    assert documented == enforced


def test_every_route_has_a_heading_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^### `([A-Z]+) ([^`?\s]+)", text, flags=re.M))
    missing = [f"{m} {p}" for m, p in _app_routes() if (m, p) not in documented]
    assert not missing, f"routes missing from docs/api.md: {missing}"


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    missing = [code for code in STATUS_BY_CODE if f"`{code}`" not in text]
    assert not missing, f"error codes missing from docs/api.md: {missing}"


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in text or f"`SHOAL_{name.upper()}`" not in text
    ]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_committed_openapi_matches_the_app() -> None:
    committed = json.loads((DOCS / "openapi.json").read_text())
    assert committed == create_app(Settings()).openapi(), (
        "docs/openapi.json is stale: run `make openapi` and review the diff"
    )


def test_every_index_setting_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    missing = [name for name in IndexSettings.__dataclass_fields__ if f"`{name}`" not in text]
    assert not missing, f"index settings missing from docs/api.md: {missing}"


def test_every_metric_family_is_documented() -> None:
    text = (DOCS / "operations.md").read_text()
    registry = create_app(Settings()).state.metrics.registry
    exported = [
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    ]
    assert any(name.startswith("shoal_") for name in exported)
    missing = [name for name in exported if f"| `{name}` |" not in text]
    assert not missing, f"metrics missing from the table in docs/operations.md: {missing}"
