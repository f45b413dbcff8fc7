"""``/api/v1/catalogs``: the catalogs the caller may use, with the settings to give a client;
and ``public_base_url``, the address clients reach the gateway at."""

from __future__ import annotations

from aiohttp import web

from ..auth.authz import may_use_catalog
from ..auth.caller import require_principal
from ..state import CONFIGURED
from .operations import Operation
from .schemas import NO_STORE, Catalog, CatalogList

__all__ = ("OPERATIONS", "public_base_url")


def public_base_url(request: web.Request) -> str:
    configured = request.app[CONFIGURED].settings.server.public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def list_catalogs(request: web.Request) -> web.Response:
    principal = require_principal(request, "catalog", None)
    settings = request.app[CONFIGURED].settings
    base = public_base_url(request)
    answer = CatalogList(
        catalogs=[
            Catalog(
                name=name,
                tenant=catalog.tenant,
                default=name == settings.default_catalog,
                uri=f"{base}/v1/{name}/",
                oauth2_server_uri=f"{base}/v1/{name}/v1/oauth/tokens",
            )
            for name, catalog in sorted(settings.catalogs.items())
            if may_use_catalog(principal, catalog)
        ]
    )
    # Built from the request's Host when public_url is unset: never to be stored by a cache
    # for other clients (a poisoned Host would otherwise be served to everyone).
    return web.json_response(answer.model_dump(mode="json"), headers=NO_STORE)


OPERATIONS = (
    Operation("GET", "/api/v1/catalogs", list_catalogs, "Catalogs the caller may use", 200,
              CatalogList, errors=(401,), no_store=True),
)  # fmt: skip
