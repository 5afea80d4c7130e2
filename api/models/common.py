from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from api.json_vectors import ParsedVector


def _floats_fast(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A list of JSON floats passes as it is; anything else goes through the full strict
    validation, which rejects (and names) exactly what it always did.

    Validating a vector float by float costs about 50 ns each in pydantic: a fifth of an
    upsert's server time. Reading every element's type is one C-level pass. Ints take the
    strict path too (a huge int needs its own checks); orjson gives floats for `1.0`. The
    lean lane's own parse gives a `ParsedVector` of the same values (api/json_vectors.py)."""
    if type(value) is ParsedVector or (
        type(value) is list and set(map(type, value)) <= _FLOAT_ONLY
    ):
        return value
    return handler(value)


_FLOAT_ONLY = {float}

# Strict: a JSON string "1.5" or `true` in a vector is a client bug, not a number to coerce.
Vector = Annotated[list[Annotated[float, Field(strict=True)]], WrapValidator(_floats_fast)]


def _decode_float32(text: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError(
            "vector_b64", "not valid base64 (standard alphabet, with padding)"
        ) from None
    if not raw or len(raw) % 4:
        raise PydanticCustomError(
            "vector_b64",
            "decodes to {size} bytes: expected a non-empty whole number of float32 values",
            {"size": len(raw)},
        )
    return np.frombuffer(raw, dtype="<f4")


# The compact encoding: base64 of the little-endian float32 values (4 bytes per dimension
# against 8-20 characters of JSON). Decoded here into a float32 array; the server checks its
# dimension and finiteness as it does a JSON vector's.
VectorB64 = Annotated[
    str,
    Field(
        strict=True,
        description="Base64 (standard alphabet, padded) of the vector's little-endian float32 "
        "values; give it instead of `vector`.",
    ),
    AfterValidator(_decode_float32),
]


def one_vector(value: Any, info: ValidationInfo) -> Any:
    """The `vector` field's check that exactly one of `vector` and `vector_b64` was given
    (declared after `vector_b64`, so it sees that one's decoded value); `vector` holds the
    query or point vector either way. Errors name `vector`, as when it alone existed."""
    if "vector_b64" not in info.data:
        return value  # `vector_b64` was invalid: its own error says why
    decoded = info.data["vector_b64"]
    if value is None and decoded is None:
        raise PydanticCustomError("missing", "Field required")
    if value is not None and decoded is not None:
        raise PydanticCustomError(
            "vector_conflict", "give either `vector` or `vector_b64`, not both"
        )
    return decoded if value is None else value


def encode_vector_b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def vector_field(vector_b64: Any) -> str:
    """The request field a vector came in, for error paths."""
    return "vector" if vector_b64 is None else "vector_b64"


# Strict too: `true` or "10" where a count belongs is a client bug.
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True)]  # ints are fine; true and "2" are not


def absent(value: object) -> bool:
    """Optional response fields that were not asked for are left out, not sent as null."""
    return value is None


class RequestModel(BaseModel):
    """Unknown fields are errors: a typo must not silently do nothing."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`, `invalid`.")
    message: str = Field(description="What went wrong, naming the offending field.")


class ErrorResponse(BaseModel):
    error: ErrorBody
