"""The audit log: admin actions and refusals as structured lines on `shoal.audit`, no secrets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.logs import JsonFormatter
from tests.support import ADMIN, ADMIN_KEY, app_client, bearer


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [
        orjson.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "shoal.audit"
    ]


def test_admin_actions_and_refusals_are_audited_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.audit")
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY) as client:
        client.post("/v1/collections", json={"name": "docs", "dim": 2}, headers=ADMIN)
        body = {"collection": "docs", "tenant": "acme", "role": "write"}
        created = client.post("/v1/keys", json=body, headers=ADMIN).json()
        key, key_id = created["key"], created["id"]
        quotas = {"quotas": {"max_points": 5}}
        client.patch("/v1/collections/docs/tenants/acme", json=quotas, headers=ADMIN)
        client.delete("/v1/collections/docs", headers=bearer(key))  # denied
        # A wrong secret: the last hex digit changed (a fixed "0" was the key itself 1 in 16).
        wrong = key[:-1] + ("1" if key.endswith("0") else "0")
        client.get("/v1/collections", headers=bearer(wrong))  # auth failure
        client.delete(f"/v1/keys/{key_id}", headers=ADMIN)
        client.delete("/v1/collections/docs/tenants/acme", headers=ADMIN)
        client.delete("/v1/collections/docs", headers=ADMIN)
        client.post("/v1/collections/docs/tenants/acme/points/count", json={}, headers=ADMIN)
    lines = audit_lines(caplog)
    summary = [(line["audit"], line["actor"], line["outcome"]) for line in lines]
    assert summary == [
        ("create_collection", "admin", "ok"),
        ("create_key", "admin", "ok"),
        ("patch_tenant", "admin", "ok"),
        ("delete_collection", f"key:{key_id}", "forbidden"),
        ("auth_failed", None, "unauthorized"),
        ("revoke_key", "admin", "ok"),
        ("delete_tenant", "admin", "not_found"),  # no points were ever written
        ("delete_collection", "admin", "ok"),
    ]
    assert lines[0]["collection"] == "docs"
    assert lines[1]["key_id"] == key_id and lines[1]["key_scope"] == "docs/acme"
    assert lines[2]["quotas"] == {"max_points": 5} and lines[2]["tenant"] == "acme"
    assert lines[4]["key_id"] == key_id and lines[4]["reason"] == "unknown API key"
    assert lines[5]["key_id"] == key_id
    assert lines[7]["keys_revoked"] == []  # the key was revoked already
    assert all(line["logger"] == "shoal.audit" for line in lines)
    text = "\n".join(orjson.dumps(line).decode() for line in lines)
    assert key.split("_")[2] not in text and ADMIN_KEY not in text
