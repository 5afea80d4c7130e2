"""The lean vector path (api/models/common.py) accepts and rejects exactly what the strict
per-float validation does, with the same errors, and the HTTP answers agree."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from api.models.common import Vector
from tests.api.helpers import create_collection, tenant_url

STRICT = TypeAdapter(list[Annotated[float, Field(strict=True)]])
LEAN = TypeAdapter(Vector)

ELEMENTS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
VALUES = st.one_of(
    st.lists(ELEMENTS, max_size=8),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8),
    st.text(max_size=4),
    st.none(),
    st.integers(),
    st.dictionaries(st.text(max_size=2), st.floats(), max_size=2),
)


def outcome(adapter: TypeAdapter[Any], value: Any) -> tuple[str, Any]:
    try:
        return "ok", adapter.validate_python(value)
    except ValidationError as exc:
        return "error", [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_lean_and_strict_validation_agree(value: Any) -> None:
    assert outcome(LEAN, value) == outcome(STRICT, value)


@pytest.mark.parametrize(
    "vector",
    [
        [1.0, True, 0.5, 0.25],
        [1.0, "0.5", 0.5, 0.25],
        [1.0, None, 0.5, 0.25],
        [1.0, [0.5], 0.5, 0.25],
        [1.0, 2.0, 3.0, 2**62],
        "1,2,3,4",
        {"0": 1.0},
    ],
)
def test_the_same_invalid_bodies_get_the_same_answers(client: TestClient, vector: Any) -> None:
    """Over HTTP the error names the element the strict validation names."""
    create_collection(client, "lean", dim=4)
    body = orjson.dumps({"vector": vector, "k": 3})
    headers = {"content-type": "application/json"}
    response = client.post(f"{tenant_url('lean', 'alice')}/query", content=body, headers=headers)
    kind, errors = outcome(STRICT, vector)
    if kind == "ok":  # a valid vector (2**62 is a number): then the unknown tenant answers
        assert response.status_code == 404, response.text
        return
    assert response.status_code == 422, response.text
    loc = "vector" + "".join(f"[{part}]" for part in errors[0][0])
    assert response.json()["error"]["message"].startswith(loc), (loc, response.text)
