"""A minimal fast Iceberg upstream for the benchmark: a raw asyncio protocol (no framework)
answering every GET with one fixed ``loadTable`` JSON (~1.7 KB), ``/v1/config`` with a config
JSON, and the upstream token endpoint with a token. HTTP/1.1 keep-alive and pipelining; no
request bodies are expected (a Content-Length body is skipped).

    python bench/upstream_fast.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import typing

TABLE = {
    "metadata-location": "s3://warehouse/bench/events/metadata/00003-6b5c9d1e.metadata.json",
    "metadata": {
        "format-version": 2,
        "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
        "location": "s3://warehouse/bench/events",
        "last-sequence-number": 3,
        "last-updated-ms": 1767225600000,
        "last-column-id": 5,
        "current-schema-id": 0,
        "schemas": [
            {
                "type": "struct",
                "schema-id": 0,
                "identifier-field-ids": [1],
                "fields": [
                    {"id": 1, "name": "id", "required": True, "type": "long"},
                    {"id": 2, "name": "ts", "required": True, "type": "timestamptz"},
                    {"id": 3, "name": "kind", "required": False, "type": "string"},
                    {"id": 4, "name": "value", "required": False, "type": "double"},
                    {"id": 5, "name": "payload", "required": False, "type": "binary"},
                ],
            }
        ],
        "default-spec-id": 0,
        "partition-specs": [
            {
                "spec-id": 0,
                "fields": [
                    {"name": "ts_day", "transform": "day", "source-id": 2, "field-id": 1000}
                ],
            }
        ],
        "last-partition-id": 1000,
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": {"write.format.default": "parquet", "owner": "bench"},
        "current-snapshot-id": 2663087109101640605,
        "refs": {"main": {"snapshot-id": 2663087109101640605, "type": "branch"}},
        "snapshots": [
            {
                "sequence-number": 3,
                "snapshot-id": 2663087109101640605,
                "parent-snapshot-id": 1458375906238012134,
                "timestamp-ms": 1767225600000,
                "summary": {
                    "operation": "append",
                    "added-records": "1000",
                    "total-records": "3000",
                },
                "manifest-list": "s3://warehouse/bench/events/metadata/snap-2663087109101640605-1-4b.avro",
                "schema-id": 0,
            }
        ],
        "snapshot-log": [{"timestamp-ms": 1767225600000, "snapshot-id": 2663087109101640605}],
        "metadata-log": [
            {
                "timestamp-ms": 1767139200000,
                "metadata-file": "s3://warehouse/bench/events/metadata/00002-1f0e.metadata.json",
            }
        ],
        "statistics": [],
        "partition-statistics": [],
    },
    "config": {"s3.endpoint": "http://127.0.0.1:8333", "s3.path-style-access": "true"},
}
CONFIG = {"defaults": {}, "overrides": {"prefix": "warehouse"}}
TOKEN = {"access_token": "upstream-bench-token", "token_type": "bearer", "expires_in": 86400}


def _response(payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


TABLE_RESPONSE = _response(TABLE)
CONFIG_RESPONSE = _response(CONFIG)
TOKEN_RESPONSE = _response(TOKEN)
BODY_BYTES = len(json.dumps(TABLE, separators=(",", ":")))


class FixedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end]
            skip = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                skip = int(lower[at + 17 : stop if stop >= 0 else None])
            if len(self.buffer) < end + 4 + skip:
                break
            self.buffer = self.buffer[end + 4 + skip :]
            line = head.split(b"\r\n", 1)[0]
            if b" /v1/config" in line:
                out.append(CONFIG_RESPONSE)
            elif b"/oauth/tokens" in line:
                out.append(TOKEN_RESPONSE)
            else:
                out.append(TABLE_RESPONSE)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
