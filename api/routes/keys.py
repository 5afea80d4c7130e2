from __future__ import annotations

from fastapi import APIRouter

from api.deps import DatabaseDep, OrjsonRoute
from api.models.keys import KeyCreate, KeyCreated, KeyList, KeyOut
from server.apikeys import KeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=OrjsonRoute)


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        id=record.key_id,
        collection=record.collection,
        tenant=record.tenant,
        role=record.role.value,
        description=record.description,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


@router.post("", status_code=201, summary="Admin: create a tenant key (the key is shown once)")
def create_key(body: KeyCreate, database: DatabaseDep) -> KeyCreated:
    record, token = database.create_key(
        body.collection, body.tenant, body.role, body.expires_at, body.description
    )
    return KeyCreated(**_out(record).model_dump(), key=token)


@router.get("", summary="Admin: list keys, without their secrets")
def list_keys(database: DatabaseDep) -> KeyList:
    return KeyList(keys=[_out(r) for r in database.keys.list()])


@router.delete("/{key_id}", summary="Admin: revoke a key (requests with it get 401 at once)")
def revoke_key(key_id: str, database: DatabaseDep) -> KeyOut:
    return _out(database.keys.revoke(key_id))
