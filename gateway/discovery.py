"""What OAuth clients discover: the token-signing key set and the authorization-server
metadata (RFC 8414), with URLs from ``public_base_url``. The catalogs a caller may use are in
the management API (``management.catalogs``)."""

from __future__ import annotations

from aiohttp import web

from .management.catalogs import public_base_url
from .management.schemas import NO_STORE
from .state import CONFIGURED, TOKENS

__all__ = ("jwks", "oauth_metadata")


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[TOKENS].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


async def oauth_metadata(request: web.Request) -> web.Response:
    """RFC 8414 metadata, so generic OAuth clients can find the token endpoint and keys."""
    base = public_base_url(request)
    return web.json_response(
        {
            "issuer": request.app[CONFIGURED].settings.tokens.issuer,
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
