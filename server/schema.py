"""Fields declared after a collection was created: indexing the points already stored.

The declaration itself is one write (`Collection.extend_schema`); from then on every writer
indexes the new fields, and readers refuse to filter on them (`Collection.indexing`) until
this background pass has gone over the points that existed before.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import orjson

from index.attributes import FieldType
from server.errors import NotFound

if TYPE_CHECKING:
    from server.collection import Collection

log = logging.getLogger("shoal.schema")
_CHUNK = 4096  # labels per write-mutex hold: writers wait a few milliseconds at most


def index_new_fields(
    collection: Collection, added: dict[str, FieldType], labels: np.ndarray
) -> None:
    """Index the points stored before `added` was declared, a chunk per write-mutex hold.
    Writers index new fields themselves from the moment they are declared, and readers
    never look at a field still in `indexing`, so the mutex alone is enough."""
    started = time.perf_counter()
    try:
        for start in range(0, len(labels), _CHUNK):
            with collection.write_mutex():
                for label in labels[start : start + _CHUNK].tolist():
                    if not collection.arena.is_live(label):
                        continue
                    stored = orjson.loads(collection.points.attributes_json(label))
                    for name, field_type in added.items():
                        value = stored.get(name)
                        collection.attributes.set_field(name, field_type, label, value)
    except NotFound:
        return  # dropped meanwhile
    finally:
        collection.indexing -= set(added)
    log.info(
        "collection %s: fields %s indexed over %d points in %.2f s",
        collection.name,
        ", ".join(sorted(added)),
        len(labels),
        time.perf_counter() - started,
    )
