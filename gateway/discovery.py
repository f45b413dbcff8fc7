"""What clients discover: the token-signing key set, OAuth authorization-server metadata, and
the catalogs a caller may use (``/api/v1/catalogs``), all with URLs from ``public_base_url``."""

from __future__ import annotations

from aiohttp import web

from .auth.authz import may_use_catalog
from .auth.caller import require_principal
from .management.schemas import NO_STORE
from .state import SETTINGS, TOKENS

__all__ = ("jwks", "list_catalogs", "oauth_metadata", "public_base_url")


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[TOKENS].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


async def oauth_metadata(request: web.Request) -> web.Response:
    """RFC 8414 metadata, so generic OAuth clients can find the token endpoint and keys."""
    base = public_base_url(request)
    return web.json_response(
        {
            "issuer": request.app[SETTINGS].tokens.issuer,
            "token_endpoint": f"{base}/v1/oauth/tokens",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": [
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        },
        # Built from the request's Host when public_url is unset: a shared cache must never
        # serve one client's answer (a forged Host, say) to another.
        headers=NO_STORE,
    )


def public_base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].server.public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def list_catalogs(request: web.Request) -> web.Response:
    """The catalogs the caller may use, with the settings to give a client."""
    principal = require_principal(request, "catalog", None)
    settings = request.app[SETTINGS]
    base = public_base_url(request)
    catalogs = [
        {
            "name": name,
            "tenant": catalog.tenant,
            "default": name == settings.default_catalog,
            "uri": f"{base}/v1/{name}/",
            "oauth2-server-uri": f"{base}/v1/{name}/v1/oauth/tokens",
        }
        for name, catalog in sorted(settings.catalogs.items())
        if may_use_catalog(principal, catalog)
    ]
    # Built from the request's Host when public_url is unset: never to be stored by a cache
    # for other clients (a poisoned Host would otherwise be served to everyone).
    return web.json_response({"catalogs": catalogs}, headers=NO_STORE)
