"""The PyIceberg round trip the client tests share: create, append, scan exactly, list, drop."""

from __future__ import annotations

import secrets
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import load_catalog

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
# An int64 beyond 2**53 and a non-ASCII string: both must come back exactly.
ROUNDTRIP_ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "a"},
    {"id": 2, "name": "b"},
    {"id": 9_007_199_254_740_993, "name": "ü"},
]


def roundtrip(properties: dict[str, Any]) -> None:
    """Create a namespace and a table, append, scan exactly, list, drop."""
    catalog = load_catalog("pangolin", **properties)
    namespace = f"rt_{secrets.token_hex(4)}"
    catalog.create_namespace(namespace)
    table = catalog.create_table(f"{namespace}.events", schema=SCHEMA)
    rows = pa.Table.from_pylist(ROUNDTRIP_ROWS, schema=SCHEMA)
    table.append(rows)
    scanned = catalog.load_table(f"{namespace}.events").scan().to_arrow()
    assert scanned.sort_by("id").to_pylist() == rows.to_pylist()
    assert catalog.list_tables(namespace) == [(namespace, "events")]
    assert (namespace,) in catalog.list_namespaces()
    catalog.drop_table(f"{namespace}.events")
    catalog.drop_namespace(namespace)
    assert (namespace,) not in catalog.list_namespaces()
