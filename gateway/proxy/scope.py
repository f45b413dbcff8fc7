"""Keeping a catalog to its own warehouse.

Several catalogs may be warehouses (SeaweedFS table buckets, Polaris catalogs ...) of one
upstream reached with one upstream credential. Without a fence, a client of catalog A could
name warehouse B in ``/v1/config?warehouse=B`` or put B's prefix in a path and read B's tables
with the gateway's credential. So when a catalog names its warehouse, the gateway:

- always asks ``/v1/config`` for that warehouse, whatever the client sent, and tells clients
  its prefix (``overrides.prefix``);
- forwards only paths under that prefix; a path with no prefix (clients that never call
  ``/v1/config``, such as iceberg-js without a warehouse) is put under it; any other prefix
  answers 404, as a warehouse that does not exist would.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote

from ..errors import NotFound
from ..settings import CatalogSettings

__all__ = ("WarehouseScope",)

# First segments of Iceberg routes that carry no prefix (``/v1/namespaces`` ...).
_UNPREFIXED: Final = frozenset({"namespaces", "tables", "views", "transactions"})


class WarehouseScope:
    def __init__(self, catalog: CatalogSettings) -> None:
        self.warehouse = catalog.warehouse
        # The upstream's path prefix for the warehouse: SeaweedFS uses the bucket name, other
        # catalogs may differ (set ``prefix`` then).
        self.prefix = catalog.prefix or catalog.warehouse

    def config_query(self, query: str) -> str:
        """The ``/v1/config`` query string with the catalog's warehouse, and no other."""
        if not self.warehouse:
            return query
        params = [p for p in query.split("&") if p and p.partition("=")[0] != "warehouse"]
        params.append("warehouse=" + quote(self.warehouse, safe=""))
        return "&".join(params)

    def upstream_tail(self, tail: str) -> str:
        """``tail`` (the raw path after ``/v1/``) as it must go upstream; 404 if outside."""
        if not self.prefix or tail in ("config", ""):
            return tail
        first, _, _ = tail.partition("/")
        if first in _UNPREFIXED:
            return f"{quote(self.prefix, safe='')}/{tail}"
        if unquote(first) == self.prefix:
            return tail
        raise NotFound("No such warehouse in this catalog")
