"""The floor any Python proxy reaches: a pass-through proxy in plain aiohttp (default asyncio
loop, like the gateway), one ClientSession with keep-alive, streaming both ways, no access log.

    python bench/minimal_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


async def session_ctx(app: web.Application) -> object:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    yield
    await app["session"].close()


async def proxy(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    url = app["upstream"] + request.raw_path
    data = request.content if request.body_exists else None
    async with app["session"].request(
        request.method, url, headers=headers, data=data, allow_redirects=False
    ) as upstream:
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
        response = web.StreamResponse(status=upstream.status, headers=out)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(65536):
            await response.write(chunk)
        await response.write_eof()
        return response


app = web.Application()
app.cleanup_ctx.append(session_ctx)
app.router.add_route("*", "/{tail:.*}", proxy)

if __name__ == "__main__":
    app["upstream"] = sys.argv[2].rstrip("/")
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
