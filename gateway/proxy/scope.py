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
from ..routing import ROUTE_KEYWORDS, ROUTES, UNKNOWN, CatalogPath
from ..settings import CatalogSettings

__all__ = ("WarehouseScope",)

_CONFIG: Final = ROUTES["config"]


class WarehouseScope:
    def __init__(self, catalog: CatalogSettings) -> None:
        self.warehouse = catalog.warehouse
        # The upstream's path prefix for the warehouse: SeaweedFS uses the bucket name, other
        # catalogs may differ (set ``prefix`` then).
        self.prefix = catalog.prefix or catalog.warehouse

    def config_query(self, query: str) -> str:
        """The ``/v1/config`` query string: exactly ``warehouse=<the catalog's>``.

        Nothing of the client's query is kept. Parsers disagree on parameter names
        (``%77arehouse``, ``WAREHOUSE``, ``warehouse%00``, repeats: first or last wins), and
        the spec defines no other parameter here, so whatever the client wrote, the upstream
        can read only one warehouse: ours."""
        if not self.warehouse:
            return query
        return "warehouse=" + quote(self.warehouse, safe="")

    def upstream_tail(self, path: CatalogPath) -> str:
        """The normalised tail of ``path`` as it must go upstream; 404 if outside."""
        tail = path.tail
        if not self.prefix or path.route is _CONFIG:
            return tail
        if path.route is UNKNOWN:
            first = tail.partition("/")[0]
            if unquote(first) == self.prefix:
                return tail
            if first not in ROUTE_KEYWORDS:
                raise NotFound("No such warehouse in this catalog")
        elif path.prefix is not None:
            if unquote(path.prefix) == self.prefix:
                return tail
            raise NotFound("No such warehouse in this catalog")
        return f"{quote(self.prefix, safe='')}/{tail}"
