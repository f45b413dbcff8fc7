"""The security review's hostile-input corpus (issue 9), driven at ONE live gateway.

``pangolin-gateway serve`` runs as a real process (its stderr captured) in front of two
raw-socket upstreams that record every request byte for byte: catalog ``default`` (fenced to
warehouse ``ours``, ``upstream_auth`` bearer) and catalog ``open`` (no warehouse, no upstream
auth). The upstreams answer like a lenient catalog would: TRACE is echoed (the received request
head as the body, as Apache httpd does), and any path that a server merging ``//``, dropping
``;params`` and decoding ``%XX`` reads as ``/v1/config`` or a table answers with the upstream
token in ``token``, so an answer the gateway fails to filter shows in the secret search.

Every case is raw bytes on its own socket, so nothing normalises it. The whole corpus runs once
(the module fixture); each test asserts one property, listing every offending case:

- no answer is a 5xx, and every HTTP input gets a complete HTTP answer;
- each case gets what the review expects (its status where the issue states one, else "4xx or
  an answer forwarded from the upstream");
- the gateway is still up and still authenticates afterwards;
- the identity tables of the store are unchanged, and the audit log gained no success record
  of a change;
- no planted secret (keys, tokens, the upstream bearer, an admin password) appears in the
  gateway's log or in any answer;
- the upstreams received exactly one request per forwarded client request (nothing smuggled),
  never a client credential or a spoofed identity header, nothing outside the fence, no token
  endpoint look-alike, and on ``/v1/config`` exactly one ``warehouse``: the catalog's;
- a client that disconnects mid-body is no server error (metrics) and leaves no traceback.

To extend the corpus, add ``Case`` rows to ``CASES`` (placeholders are listed by ``Secrets``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import gzip
import http.client
import json
import os
import random
import re
import signal
import socket
import socketserver
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus, unquote_to_bytes

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing import ICEBERG_METHODS

from ..processes import clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
WAREHOUSE: Final = "ours"
ROLE_HEADERS: Final = (
    "x-pangolin-principal-id",
    "x-pangolin-principal-name",
    "x-pangolin-principal-type",
    "x-pangolin-role",
    "x-pangolin-tenant",
)
ANSWER_TIMEOUT: Final = 5.0  # seconds for one case's answer


# == the corpus ================================================================================
#
# Templates are raw bytes with placeholders (see ``Secrets.values``); ``@CASE@`` is the case's
# tag (sent as X-Corpus-Case, echoed by the upstream as X-Upstream-Case), ``@BODY@`` marks where
# the body starts and ``@LEN@`` is the length of the rendered body after it.


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # the review's class
    raw: bytes
    status: int | None = None  # the status the issue states for it
    refused: bool = False  # a 4xx from the gateway itself, nothing forwarded
    http: bool = True  # False: not HTTP at all; a closed connection is an acceptable answer
    abort: bool = False  # the client disconnects after sending ``raw`` (no answer is read)
    reset: bool = False  # ... with a TCP reset instead of a FIN
    as_received: bool = False  # if forwarded, the upstream must get the body byte for byte

    @property
    def must_refuse(self) -> bool:
        return self.refused or (self.status is not None and self.status >= 400)


def req(
    method: str, target: str, *headers: str | bytes, body: bytes | None = None, eol: bytes = b"\r\n"
) -> bytes:
    """A request template: request line, Host, the case tag, ``headers``, and ``body`` with
    its Content-Length (computed after the placeholders are filled in)."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: gateway", b"X-Corpus-Case: @CASE@"]
    lines += [h if isinstance(h, bytes) else h.encode("latin-1") for h in headers]
    if body is not None:
        lines.append(b"Content-Length: @LEN@")
    return eol.join(lines) + eol + eol + b"@BODY@" + (body or b"")


def chunked(*parts: bytes, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


# A request hidden in a body: the upstream must never receive it as a request of its own.
SMUGGLED: Final = (
    b"DELETE /v1/other/namespaces/victim HTTP/1.1\r\nHost: upstream\r\n"
    b"X-Pangolin-Role: Root\r\nX-Corpus-Case: smuggled\r\nContent-Length: 0\r\n\r\n"
)


def overflowing(encode: Callable[[bytes], bytes], noise: int = 0) -> bytes:
    """An encoded body whose decoded form is JSON (with ``noise`` incompressible bytes in a
    value), filler, then SMUGGLED starting exactly at the encoded length: what reaches the
    upstream as a second request from a gateway that decodes the body but keeps the client's
    Content-Length."""
    start = b'{"namespace": ["smuggle"], "properties": {"x": "' + random.Random(7).randbytes(noise)
    for fill in range(4096):
        body = start + b" " * fill + b'"}}'
        encoded = encode(body + SMUGGLED)
        if len(encoded) == len(body):
            return encoded
    raise AssertionError("no filler length lines the smuggled request up")


def brotli_stored(data: bytes) -> bytes:
    """A brotli stream holding ``data`` as one uncompressed meta-block (RFC 7932 9.2):
    WBITS=16, ISLAST=0, MNIBBLES=4, MLEN-1, ISUNCOMPRESSED=1; then an empty last block."""
    header = ((len(data) - 1) << 4) | (1 << 20)
    return header.to_bytes(3, "little") + data + b"\x03"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


KEY: Final = "X-API-Key: @KEY@"
BEARER: Final = "Authorization: Bearer @TOKEN@"
ROOT: Final = "X-API-Key: @ROOT@"
JSON_TYPE: Final = "Content-Type: application/json"
FORM_TYPE: Final = "Content-Type: application/x-www-form-urlencoded"
NS: Final = b'{"namespace": ["corpus"]}'
TABLE: Final = "/v1/namespaces/ns/tables/t"
OPEN: Final = "/v1/open/v1"
LOGIN: Final = b'{"username": "@ADMIN@", "password": "@PASSWORD@"}'
USERS: Final = "/api/v1/service-users"
VICTIM: Final = "/api/v1/service-users/@VICTIM_ID@"
BAD_KEY: Final = "X-API-Key: pgl_0000000000000000_" + "A" * 43
CREDENTIALS_FORM: Final = b"grant_type=client_credentials&client_id=@USER_ID@&client_secret=@KEY@"
# Big bodies (deterministic): one compresses past 64 KiB, one decodes far past it.
_NOISE: Final = base64.b64encode(random.Random(9).randbytes(100_000))
BIG_GZIP: Final = _gzip(b'{"namespace": ["big"], "properties": {"x": "' + _NOISE + b'"}}')
BOMB_GZIP: Final = _gzip(b'{"namespace": ["bomb"], "properties": {"x": "' + b" " * 2**21 + b'"}}')
NESTED: Final = b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
NESTED_OBJECTS: Final = b'{"description": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001


def in_codec(text: str, codec: str = "utf-16") -> bytes:
    return text.encode(codec)  # "utf-16" and "utf-32" write a BOM; -le / -be do not


# fmt: off
# One row per case: Case(name, class, template, expectations). The classes follow the review.
CASES: Final[tuple[Case, ...]] = (
    # -- methods: Iceberg REST uses GET, HEAD, POST, DELETE; any other is 405, unforwarded ----
    Case("TRACE with a key", "methods", req("TRACE", "/v1/namespaces", KEY), status=405),
    Case("TRACE a table with a token", "methods",
         req("TRACE", "/v1/default/v1/namespaces/ns/tables/t", BEARER), status=405),
    Case("TRACE on the open catalog", "methods", req("TRACE", f"{OPEN}/config", KEY), status=405),
    Case("TRACE with Max-Forwards", "methods",
         req("TRACE", "/v1/namespaces", KEY, "Max-Forwards: 0"), status=405),
    Case("PROPFIND", "methods",
         req("PROPFIND", "/v1/namespaces", KEY, "Depth: 1", "Content-Type: application/xml",
             body=b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'),
         status=405),
    Case("PROPFIND on the open catalog", "methods",
         req("PROPFIND", f"{OPEN}/namespaces", KEY, "Depth: infinity"), status=405),
    Case("MKCOL", "methods", req("MKCOL", "/v1/namespaces/new", KEY), status=405),
    Case("COPY", "methods",
         req("COPY", TABLE, KEY, "Destination: /v1/other/namespaces/ns/tables/t"), status=405),
    Case("MOVE", "methods",
         req("MOVE", f"{OPEN}/namespaces/ns/tables/t", KEY, "Destination: /v1/x"), status=405),
    Case("LOCK", "methods",
         req("LOCK", TABLE, KEY, "Timeout: Infinite", body=b"<lockinfo/>"), status=405),
    Case("UNLOCK", "methods", req("UNLOCK", TABLE, KEY, "Lock-Token: <x>"), status=405),
    Case("PATCH", "methods",
         req("PATCH", "/v1/namespaces/ns", KEY, JSON_TYPE, body=b"{}"), status=405),
    Case("PUT", "methods", req("PUT", TABLE, KEY, JSON_TYPE, body=b"{}"), status=405),
    Case("CONNECT on a catalog route", "methods",
         req("CONNECT", "/v1/namespaces", KEY), status=405),
    Case("CONNECT authority form", "methods", req("CONNECT", "127.0.0.1:22", KEY), refused=True),
    Case("OPTIONS", "methods", req("OPTIONS", "/v1/namespaces", KEY), status=405),
    Case("OPTIONS preflight", "methods",
         req("OPTIONS", f"{OPEN}/namespaces", "Origin: http://x",
             "Access-Control-Request-Method: DELETE"), status=405),
    Case("OPTIONS *", "methods", req("OPTIONS", "*", KEY), refused=True),
    Case("lower-case get", "methods", req("get", "/v1/namespaces", KEY), status=405),
    Case("made-up method", "methods", req("FROBNICATE", "/v1/namespaces", KEY), status=405),
    Case("made-up method with a body", "methods",
         req("X-SYNC", f"{OPEN}/namespaces", KEY, JSON_TYPE, body=NS), status=405),
    # -- compressed and oddly framed bodies: 4xx, or one upstream request framed by us -------
    Case("gzip body hiding a request", "bodies",
         req("POST", "/v1/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             body=overflowing(_gzip)), as_received=True),
    Case("gzip body hiding a request, open catalog", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             body=overflowing(_gzip)), as_received=True),
    Case("deflate body hiding a request", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: deflate",
             body=overflowing(zlib.compress)), as_received=True),
    Case("br body holding a request", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: br",
             body=brotli_stored(NS + SMUGGLED)), as_received=True),
    Case("identity,gzip body hiding a request", "bodies",
         req("POST", "/v1/namespaces", KEY, JSON_TYPE, "Content-Encoding: identity, gzip",
             body=overflowing(_gzip)), as_received=True),
    Case("x-gzip body hiding a request, with a token", "bodies",
         req("POST", f"{OPEN}/namespaces", BEARER, JSON_TYPE, "Content-Encoding: x-gzip",
             body=overflowing(_gzip)), as_received=True),
    Case("GZIP in capitals", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: GZIP",
             body=overflowing(_gzip)), as_received=True),
    Case("gzip body over 64 KiB hiding a request", "bodies",
         req("POST", "/v1/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             body=overflowing(_gzip, noise=70_000)), as_received=True),
    Case("gzip body over 64 KiB hiding a request, open catalog", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             body=overflowing(_gzip, noise=70_000)), as_received=True),
    Case("deflate body over 64 KiB hiding a request", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: deflate",
             body=overflowing(zlib.compress, noise=70_000)), as_received=True),
    Case("gzip body, chunked", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             "Transfer-Encoding: chunked") + chunked(_gzip(NS + SMUGGLED))),
    Case("gzip body over 64 KiB compressed", "bodies",
         req("POST", "/v1/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip", body=BIG_GZIP),
         as_received=True),
    Case("gzip body decoding to 2 MiB", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Encoding: gzip",
             body=BOMB_GZIP), as_received=True),
    Case("Content-Length and Transfer-Encoding", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: 5",
             "Transfer-Encoding: chunked") + b"0\r\n\r\n" + SMUGGLED),
    Case("Transfer-Encoding and Content-Length", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked",
             "Content-Length: 200") + chunked(NS) + SMUGGLED),
    Case("two Transfer-Encoding headers", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked",
             "Transfer-Encoding: identity", "Content-Length: 4") + chunked(NS) + SMUGGLED),
    Case("Transfer-Encoding: xchunked", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: xchunked",
             "Content-Length: 25") + NS + SMUGGLED),
    Case("Transfer-Encoding with a space before the colon", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding : chunked",
             "Content-Length: 25") + NS + SMUGGLED),
    Case("Transfer-Encoding: gzip, chunked", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: gzip, chunked")
         + chunked(_gzip(NS + SMUGGLED))),
    Case("chunked with extensions", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked")
         + chunked(NS, SMUGGLED, ext=b";ext=1")),
    Case("chunked with a quoted extension", "bodies",
         req("POST", "/v1/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked")
         + chunked(NS, ext=b';a="b;c\\"d"')),
    Case("chunked with a credential in the trailer", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked",
             "Trailer: X-API-Key")
         + chunked(NS, trailer=b"X-API-Key: @OTHER@\r\nX-Pangolin-Role: Root\r\n")),
    Case("chunk size overflow", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked")
         + b"100000000000000019\r\n" + NS + b"\r\n0\r\n\r\n"),
    Case("chunk size with a bare LF", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Transfer-Encoding: chunked")
         + b"19\n" + NS + b"\n0\n\n" + SMUGGLED),
    Case("two different Content-Length", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: 25",
             "Content-Length: 400") + NS + SMUGGLED),
    Case("two equal Content-Length", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: 25",
             "Content-Length: 25") + NS),
    Case("Content-Length list", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: 25, 25") + NS),
    Case("Content-Length with a sign", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: +25") + NS),
    Case("negative Content-Length", "bodies",
         req("POST", f"{OPEN}/namespaces", KEY, JSON_TYPE, "Content-Length: -1") + NS),
    # -- parameter names on /v1/config: the upstream sees one warehouse, the catalog's ---------
    Case("warehouse=other", "query", req("GET", "/v1/config?warehouse=other", KEY)),
    Case("%77arehouse", "query", req("GET", "/v1/config?%77arehouse=other", KEY)),
    Case("WAREHOUSE", "query", req("GET", "/v1/config?WAREHOUSE=other", KEY)),
    Case("warehouse twice", "query", req("GET", "/v1/config?warehouse=a&warehouse=other", KEY)),
    Case("ware%68ouse", "query", req("GET", "/v1/config?ware%68ouse=other", KEY)),
    Case("warehouse%00", "query", req("GET", "/v1/config?warehouse%00=x", KEY)),
    Case("+warehouse", "query", req("GET", "/v1/config?+warehouse=other", KEY)),
    Case("warehouse+", "query", req("GET", "/v1/config?warehouse+=other", KEY)),
    Case("ours, then %77arehouse", "query",
         req("GET", "/v1/config?warehouse=ours&%77arehouse=other", KEY)),
    Case("double-encoded %2577arehouse", "query",
         req("GET", "/v1/config?%2577arehouse=other", KEY)),
    Case("warehouse%20", "query", req("GET", "/v1/config?warehouse%20=other", KEY)),
    Case("semicolon separator", "query", req("GET", "/v1/config?x=1;warehouse=other", KEY)),
    Case("%77arehouse on the mount", "query",
         req("GET", "/v1/default/v1/config?%77arehouse=other", KEY)),
    # -- path forms (catalog "open" has no warehouse) -----------------------------------------
    Case("empty segment before the namespace", "paths",
         req("GET", "/v1/namespaces//ns/tables/t", KEY), status=400),
    Case("empty segment before the table", "paths",
         req("GET", "/v1/namespaces/ns/tables//t", KEY), status=400),
    Case("empty segment after /v1", "paths", req("GET", "/v1//namespaces", KEY), status=400),
    Case("empty segment on the mount", "paths",
         req("GET", "/v1/default/v1//namespaces/ns/tables/t", KEY), status=400),
    Case("trailing slash on a table", "paths", req("GET", TABLE + "/", KEY)),
    Case("trailing slash on config", "paths", req("GET", "/v1/config/", KEY)),
    Case(";params on a table", "paths", req("GET", TABLE + ";x=1", KEY), status=400),
    Case(";params on a namespace", "paths",
         req("GET", "/v1/namespaces/ns;x/tables/t", KEY), status=400),
    Case("open: trailing slash on config", "paths", req("GET", f"{OPEN}/config/", KEY)),
    Case("open: config;x", "paths", req("GET", f"{OPEN}/config;x", KEY), status=400),
    Case("open: //config", "paths", req("GET", f"{OPEN}//config", KEY), status=400),
    Case("open: empty table segment", "paths",
         req("GET", f"{OPEN}/namespaces/ns/tables//t", KEY), status=400),
    Case("open: trailing slash on a table", "paths",
         req("GET", f"{OPEN}/namespaces/ns/tables/t/", KEY)),
    Case("%2F inside a namespace", "paths", req("GET", "/v1/namespaces/ns%2Ftables%2Ft", KEY)),
    Case("open: %2F table route", "paths",
         req("GET", f"{OPEN}/namespaces%2Fns%2Ftables%2Ft", KEY)),
    Case("%2e%2e segment", "paths",
         req("GET", "/v1/namespaces/%2e%2e/tables/t", KEY), status=400),
    Case("%2E%2E%2F climb", "paths",
         req("GET", "/v1/namespaces/ns/tables/%2E%2E%2F%2E%2E%2Fother", KEY), status=400),
    Case("open: ..%2f climb", "paths",
         req("GET", f"{OPEN}/namespaces/..%2f..%2fconfig", KEY), status=400),
    Case("%6Eamespaces", "paths", req("GET", "/v1/%6Eamespaces", KEY)),
    Case("%6Eamespaces table", "paths", req("GET", "/v1/%6Eamespaces/ns/tables/t", KEY)),
    Case("open: %6Eamespaces table", "paths",
         req("GET", f"{OPEN}/%6Eamespaces/ns/tables/t", KEY)),
    Case("open: %63onfig", "paths", req("GET", f"{OPEN}/%63onfig", KEY)),
    # The identifier rule (issue 12): refused whatever the catalog would say.
    Case("%0A in a name", "paths", req("GET", "/v1/namespaces/line%0Abreak", KEY), status=400),
    Case("%0D%0A in a table name", "paths",
         req("GET", "/v1/namespaces/ns/tables/t%0D%0AX-Pangolin-Role:%20Root", KEY), status=400),
    Case("* in a table name", "paths", req("GET", "/v1/namespaces/ns/tables/f*", KEY), status=400),
    Case("$ in a namespace level", "paths",
         req("GET", f"{OPEN}/namespaces/ok%1Fa$b/tables", KEY), status=400),
    Case("* in a created table's name", "paths",
         req("POST", "/v1/namespaces/ns/tables", KEY, JSON_TYPE, body=b'{"name": "*"}'),
         status=400),
    Case("a quote in a rename's destination", "paths",
         req("POST", f"{OPEN}/tables/rename", KEY, JSON_TYPE,
             body=b'{"source": {"namespace": ["a"], "name": "t"},'
                  b' "destination": {"namespace": ["b"], "name": "t\'"}}'),
         status=400),
    Case("overlong %c0%af climb", "paths",
         req("GET", "/v1/namespaces/ns/tables/..%c0%af..%c0%afconfig", KEY)),
    Case("fullwidth slash", "paths",
         req("GET", f"{OPEN}/namespaces%ef%bc%8fns%ef%bc%8ftables%ef%bc%8ft", KEY)),
    Case("backslash", "paths", req("GET", "/v1/namespaces\\ns\\tables\\t", KEY)),
    Case("%5C climb", "paths",
         req("GET", "/v1/namespaces/ns/tables/..%5C..%5Cconfig", KEY), status=400),
    Case("%00 in a name", "paths", req("GET", "/v1/namespaces/ns%00/tables/t", KEY)),
    Case("raw NUL in the path", "paths", req("GET", "/v1/namespaces/ns\x00x", KEY)),
    Case("tokens.json on the mount", "paths",
         req("GET", "/v1/default/v1/oauth/tokens.json", KEY), refused=True),
    Case("default: oauth/tokens.json", "paths",
         req("GET", "/v1/oauth/tokens.json", KEY), refused=True),
    Case("open: tokens.json", "paths", req("GET", f"{OPEN}/oauth/tokens.json", KEY), refused=True),
    Case("open: tokens%2e, with a form", "paths",
         req("POST", f"{OPEN}/oauth/tokens%2e", FORM_TYPE, body=CREDENTIALS_FORM), refused=True),
    Case("open: tokens%23", "paths", req("GET", f"{OPEN}/oauth/tokens%23x", KEY), refused=True),
    Case("open: tokens%3F", "paths", req("GET", f"{OPEN}/oauth/tokens%3Fx=1", KEY), refused=True),
    Case("open: oauth%2ftokens", "paths",
         req("GET", f"{OPEN}/oauth%2ftokens", KEY), refused=True),
    Case("open: OAUTH/TOKENS", "paths", req("GET", f"{OPEN}/OAUTH/TOKENS", KEY), refused=True),
    Case("open: oauth%c0%aftokens", "paths",
         req("GET", f"{OPEN}/oauth%c0%aftokens", KEY), refused=True),
    Case("open: oauth%ef%bc%8ftokens", "paths",
         req("GET", f"{OPEN}/oauth%ef%bc%8ftokens", KEY), refused=True),
    Case("open: oauth\\tokens", "paths", req("GET", f"{OPEN}/oauth\\tokens", KEY), refused=True),
    Case("open: %6Fauth/tokens/x", "paths",
         req("GET", f"{OPEN}/%6Fauth/tokens/x", KEY), refused=True),
    Case("open: oauth/tokens/", "paths", req("GET", f"{OPEN}/oauth/tokens/", KEY), refused=True),
    # -- malformed header lines, each with a credential in it --------------------------------
    Case("bare LF line endings", "headers", req("GET", "/v1/namespaces", KEY, eol=b"\n")),
    Case("bare LF headers after a CRLF request line", "headers",
         b"GET /v1/namespaces HTTP/1.1\r\nHost: gateway\nX-Corpus-Case: @CASE@\n"
         b"X-API-Key: @KEY@\n\n"),
    Case("bare CR line endings", "headers", req("GET", "/v1/namespaces", KEY, eol=b"\r")),
    Case("bare LF login with the password", "headers",
         req("POST", "/api/v1/login", JSON_TYPE, body=LOGIN, eol=b"\n")),
    Case("bare LF token request", "headers",
         req("POST", "/v1/oauth/tokens", FORM_TYPE, body=CREDENTIALS_FORM, eol=b"\n")),
    Case("space before the colon", "headers", req("GET", "/v1/namespaces", "X-API-Key : @KEY@")),
    Case("tab before the colon", "headers", req("GET", "/v1/namespaces", "X-API-Key\t: @KEY@")),
    Case("space before the colon, Basic", "headers",
         req("POST", "/v1/oauth/tokens", "Authorization : Basic @BASIC@", FORM_TYPE,
             body=b"grant_type=client_credentials")),
    Case("space before the colon, Root key", "headers",
         req("GET", "/api/v1/service-users", "X-API-Key : @ROOT@")),
    Case("control character after the key", "headers",
         req("GET", "/v1/namespaces", b"X-API-Key: @KEY@\x01")),
    Case("DEL after the key", "headers", req("GET", "/v1/namespaces", b"X-API-Key: @KEY@\x7f")),
    Case("control character after the header name", "headers",
         req("GET", "/v1/namespaces", b"X-API-Key\x01: @KEY@")),
    Case("vertical tab after the token", "headers",
         req("GET", "/v1/namespaces", b"Authorization: Bearer @TOKEN@\x0b")),
    Case("control character after the session", "headers",
         req("GET", "/api/v1/me", b"Authorization: Bearer @SESSION@\x1b")),
    Case("control character after the Root key", "headers",
         req("GET", "/api/v1/service-users", b"X-API-Key: @ROOT@\x02")),
    Case("key on an obs-fold line", "headers",
         req("GET", "/v1/namespaces", "X-Note: a", " X-API-Key: @KEY@")),
    Case("key followed by an obs-fold line", "headers",
         req("GET", "/v1/namespaces", KEY, "\tfolded")),
    Case("token on an obs-fold line", "headers",
         req("GET", "/v1/namespaces", "Authorization: Bearer", " @TOKEN@")),
    Case("identity header folded into a value", "headers",
         req("GET", "/v1/namespaces", KEY, "X-Note: a", " X-Pangolin-Role: Root")),
    Case("header line over 8190 bytes", "headers",
         req("GET", "/v1/namespaces", KEY, "X-Pad: " + "a" * 9000)),
    Case("key line over 8190 bytes", "headers",
         req("GET", "/v1/namespaces", "X-API-Key: @KEY@" + " " * 9000)),
    Case("token line over 16 KiB", "headers",
         req("GET", "/v1/namespaces", "Authorization: Bearer @TOKEN@" + "a" * 20_000)),
    Case("request line over 64 KiB", "headers",
         req("GET", "/v1/namespaces/" + "a" * 70_000, KEY)),
    Case("request line over 64 KiB, key in the query", "headers",
         req("GET", "/v1/namespaces?api_key=@KEY@&pad=" + "a" * 70_000, KEY)),
    Case("NUL after the key", "headers", req("GET", "/v1/namespaces", b"X-API-Key: @KEY@\x00")),
    Case("NUL before the key", "headers", req("GET", "/v1/namespaces", b"X-API-Key: \x00@KEY@")),
    Case("space inside the header name", "headers",
         req("GET", "/v1/namespaces", "X API-Key: @KEY@")),
    Case("no colon", "headers", req("GET", "/v1/namespaces", "X-API-Key @KEY@", KEY)),
    # -- duplicate credentials: a repeated credential header is 400 ---------------------------
    Case("two X-API-Key, good then bad", "credentials",
         req("GET", "/v1/namespaces", KEY, BAD_KEY), status=400),
    Case("two X-API-Key, bad then good", "credentials",
         req("GET", "/v1/namespaces", BAD_KEY, KEY), status=400),
    Case("the same X-API-Key twice", "credentials",
         req("GET", "/v1/namespaces", KEY, KEY), status=400),
    Case("X-API-Key and x-api-key of two users", "credentials",
         req("GET", "/v1/namespaces", KEY, "x-api-key: @OTHER@"), status=400),
    Case("two Authorization, good then bad", "credentials",
         req("GET", "/v1/namespaces", BEARER, "Authorization: Bearer not-a-token"), status=400),
    Case("two Authorization, keys of two users", "credentials",
         req("GET", "/v1/namespaces", "Authorization: Bearer @KEY@",
             "Authorization: Bearer @OTHER@"), status=400),
    Case("X-API-Key of one user, Bearer key of another", "credentials",
         req("GET", "/v1/namespaces", KEY, "Authorization: Bearer @OTHER@"), refused=True),
    Case("X-API-Key of one user, token of another", "credentials",
         req("GET", "/v1/namespaces", "X-API-Key: @OTHER@", BEARER), refused=True),
    Case("X-API-Key and token of the same user", "credentials",
         req("GET", "/v1/namespaces", KEY, BEARER)),
    Case("X-API-Key and Bearer None", "credentials",
         req("GET", "/v1/namespaces", KEY, "Authorization: Bearer None")),
    Case("TenantUser key, then Root key, on create", "credentials",
         req("POST", "/api/v1/service-users", KEY, ROOT, JSON_TYPE,
             body=b'{"name": "dupcred-a"}'), status=400),
    Case("Root key, then TenantUser key, on create", "credentials",
         req("POST", "/api/v1/service-users", ROOT, KEY, JSON_TYPE,
             body=b'{"name": "dupcred-b"}'), status=400),
    Case("Basic of one client, form of another", "credentials",
         req("POST", "/v1/oauth/tokens", "Authorization: Basic @BASIC_OTHER@", FORM_TYPE,
             body=CREDENTIALS_FORM), status=400),
    # -- management API JSON, sent with the Root key: 4xx, and nothing changes ----------------
    Case("duplicate name", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=b'{"name": "dup-a", "name": "dup-b"}'),
         status=400),
    Case("duplicate role on create", "json",
         req("POST", USERS, ROOT, JSON_TYPE,
             body=b'{"name": "dup-role", "role": "TenantUser", "role": "TenantAdmin"}'),
         status=400),
    Case("UTF-16 with BOM", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=in_codec('{"name": "utf16-bom"}')), refused=True),
    Case("UTF-16BE without BOM", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=in_codec('{"name": "utf16-be"}', "utf-16-be")),
         refused=True),
    Case("UTF-8 with BOM", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=b'\xef\xbb\xbf{"name": "utf8-bom"}'),
         refused=True),
    Case("UTF-32", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=in_codec('{"name": "utf32"}', "utf-32")),
         refused=True),
    Case("text/plain", "json",
         req("POST", USERS, ROOT, "Content-Type: text/plain", body=b'{"name": "plain"}'),
         status=415),
    Case("no Content-Type", "json", req("POST", USERS, ROOT, body=b'{"name": "untyped"}'),
         status=415),
    Case("form Content-Type", "json",
         req("POST", USERS, ROOT, FORM_TYPE, body=b'{"name": "formtyped"}'), status=415),
    Case("charset=utf-16", "json",
         req("POST", USERS, ROOT, "Content-Type: application/json; charset=utf-16",
             body=in_codec('{"name": "cs16"}')), refused=True),
    Case("deeply nested arrays", "json", req("POST", USERS, ROOT, JSON_TYPE, body=NESTED),
         refused=True),
    Case("NaN", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=b'{"name": "nan", "expires_in": NaN}'),
         refused=True),
    Case("lone surrogate", "json",
         req("POST", USERS, ROOT, JSON_TYPE, body=b'{"name": "x\\ud800"}'), refused=True),
    Case("PUT duplicate role", "json",
         req("PUT", VICTIM, ROOT, JSON_TYPE,
             body=b'{"role": "TenantUser", "role": "TenantAdmin"}'), status=400),
    Case("PUT duplicate active", "json",
         req("PUT", VICTIM, ROOT, JSON_TYPE, body=b'{"active": true, "active": false}'),
         status=400),
    Case("PUT UTF-16", "json",
         req("PUT", VICTIM, ROOT, JSON_TYPE, body=in_codec('{"description": "utf16"}')),
         refused=True),
    Case("PUT UTF-8 BOM", "json",
         req("PUT", VICTIM, ROOT, JSON_TYPE, body=b'\xef\xbb\xbf{"description": "bom"}'),
         refused=True),
    Case("PUT text/plain", "json",
         req("PUT", VICTIM, ROOT, "Content-Type: text/plain", body=b'{"description": "plain"}'),
         status=415),
    Case("PUT nested objects", "json",
         req("PUT", VICTIM, ROOT, JSON_TYPE, body=NESTED_OBJECTS), refused=True),
    Case("human user with a duplicate password", "json",
         req("POST", "/api/v1/users", ROOT, JSON_TYPE,
             body=b'{"username": "dup-user", "password": "@PASSWORD@", '
                  b'"password": "another-password-1"}'), status=400),
    Case("tenant with a duplicate name", "json",
         req("POST", "/api/v1/tenants", ROOT, JSON_TYPE,
             body=b'{"name": "dup-t1", "name": "dup-t2"}'), status=400),
    # -- not HTTP at all: a closed connection is an acceptable answer -------------------------
    Case("TLS ClientHello", "not http",
         bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00",
         http=False),
    Case("binary noise", "not http", random.Random(4).randbytes(512), http=False),
    Case("SSH banner with a key", "not http", b"SSH-2.0-OpenSSH_9.6 @KEY@\r\n", http=False),
    Case("HTTP/2 preface", "not http", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http=False),
    # -- clients that disconnect mid-body (sent first; no answer is read) -----------------------
    Case("login, FIN mid-body", "disconnect",
         req("POST", "/api/v1/login", JSON_TYPE, "Content-Length: 400") + LOGIN[:-2],
         abort=True),
    Case("login, reset mid-body", "disconnect",
         req("POST", "/api/v1/login", JSON_TYPE, "Content-Length: 400") + LOGIN[:-2],
         abort=True, reset=True),
    Case("login, chunked, FIN mid-body", "disconnect",
         req("POST", "/api/v1/login", JSON_TYPE, "Transfer-Encoding: chunked")
         + b"100\r\n" + LOGIN, abort=True),
    Case("token, FIN mid-body", "disconnect",
         req("POST", "/v1/oauth/tokens", FORM_TYPE, "Content-Length: 400") + CREDENTIALS_FORM,
         abort=True),
    Case("token, reset mid-body", "disconnect",
         req("POST", "/v1/oauth/tokens", FORM_TYPE, "Content-Length: 400") + CREDENTIALS_FORM,
         abort=True, reset=True),
    Case("mounted token, FIN mid-body", "disconnect",
         req("POST", "/v1/default/v1/oauth/tokens", FORM_TYPE, "Content-Length: 400")
         + CREDENTIALS_FORM, abort=True),
    Case("open catalog token, reset mid-body", "disconnect",
         req("POST", f"{OPEN}/oauth/tokens", FORM_TYPE, "Content-Length: 400")
         + CREDENTIALS_FORM, abort=True, reset=True),
)
# fmt: on
ANSWERED: Final = tuple(case for case in CASES if not case.abort)


def tag_of(index: int) -> str:
    return f"case-{index:03d}"


TAGS: Final = {tag_of(i): case for i, case in enumerate(CASES)}


# == secrets ===================================================================================


@dataclass
class Secrets:
    root_id: str
    root_key: str
    user_id: str
    user_key: str
    other_id: str
    other_key: str
    victim_id: str
    admin_id: str
    admin: str
    password: str
    token: str
    session: str
    upstream_token: str

    def values(self, tag: str) -> dict[bytes, bytes]:
        basic = base64.b64encode(f"{self.user_id}:{self.user_key}".encode())
        basic_other = base64.b64encode(f"{self.other_id}:{self.other_key}".encode())
        return {
            b"@CASE@": tag.encode(),
            b"@KEY@": self.user_key.encode(),
            b"@OTHER@": self.other_key.encode(),
            b"@ROOT@": self.root_key.encode(),
            b"@TOKEN@": self.token.encode(),
            b"@SESSION@": self.session.encode(),
            b"@USER_ID@": self.user_id.encode(),
            b"@VICTIM_ID@": self.victim_id.encode(),
            b"@ADMIN@": self.admin.encode(),
            b"@PASSWORD@": self.password.encode(),
            b"@BASIC@": basic,
            b"@BASIC_OTHER@": basic_other,
        }

    def needles(self) -> dict[str, tuple[bytes, ...]]:
        """What must never be seen, by secret: each whole, and its distinctive parts (a key's
        secret after ``pgl_<key_id>_``, a JWT's signature, slices of them)."""
        found: dict[str, tuple[bytes, ...]] = {}
        keys = (("user key", self.user_key), ("other user's key", self.other_key),
                ("Root key", self.root_key))  # fmt: skip
        for name, key in keys:
            secret = key.split("_", 2)[2]  # pgl_<key_id>_<secret>; key ids are hex
            found[name] = _encoded(key, secret, secret[:16], secret[-16:])
        signature = self.token.rsplit(".", 1)[1]
        found["gateway token"] = _encoded(self.token, signature, signature[:16], signature[-16:])
        opaque = self.session.removeprefix("pgs_")  # a session token is opaque, not a JWT
        found["session token"] = _encoded(self.session, opaque, opaque[:16], opaque[-16:])
        for name, text in (("upstream bearer", self.upstream_token), ("password", self.password)):
            found[name] = _encoded(text, text[4:20])
        found["Basic credentials"] = (self.values("")[b"@BASIC@"],)
        return found


def _encoded(*texts: str) -> tuple[bytes, ...]:
    return tuple(text.encode() for text in texts)


def seen(needles: tuple[bytes, ...], haystack: bytes) -> bytes | None:
    """The first of ``needles`` in ``haystack``."""
    return next((needle for needle in needles if needle in haystack), None)


def render(case: Case, values: dict[bytes, bytes]) -> bytes:
    head, _, body = case.raw.partition(b"@BODY@")
    for placeholder, value in values.items():
        head = head.replace(placeholder, value)
        body = body.replace(placeholder, value)
    return head.replace(b"@LEN@", str(len(body)).encode()) + body


# == the recording upstream ====================================================================


@dataclass
class Received:
    catalog: str  # which upstream: "default" (fenced, bearer) or "open"
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes
    framed: bool = True  # False: bytes that did not parse as a request

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for n, v in self.headers if n.lower().replace("_", "-") == wanted]

    @property
    def tag(self) -> str:
        tags = self.values("x-corpus-case")
        return tags[0] if len(tags) == 1 else f"<{tags!r}>"

    @property
    def lenient_path(self) -> bytes:
        return lenient(self.target.partition("?")[0].encode("latin-1"))


def lenient(path: bytes) -> bytes:
    """``path`` as the most lenient server reads it: %XX decoded (repeatedly), cut at NUL,
    ``\\``, overlong and fullwidth slashes as ``/``, ``;params`` dropped, ``//`` merged, no
    trailing ``/``, lower case."""
    for _ in range(4):
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    path = path.partition(b"\x00")[0].lower()
    for slash in (b"\\", b"\xc0\xaf", b"\xef\xbc\x8f", b"\xe0\x80\xaf"):
        path = path.replace(slash, b"/")
    segments = [segment.partition(b";")[0] for segment in path.split(b"/")]
    return b"/" + b"/".join(segment for segment in segments if segment)


_CONFIG_PATH: Final = re.compile(rb"/v1(?:/[^/]+)?/config")
_TABLE_PATH: Final = re.compile(rb"/v1/(?:.+/)?namespaces/[^/]+/(?:tables|views)/[^/]+")
_TOKEN_LOOKALIKE: Final = re.compile(rb"oauth[^a-z0-9]*tokens")


class RecordingUpstream(socketserver.ThreadingTCPServer):
    """A catalog upstream on a raw socket: parses requests itself (so it sees exactly the
    framing the gateway wrote), records each, and answers like a lenient catalog."""

    def __init__(self, catalog: str, journal: list[Received], token: str) -> None:
        self.catalog = catalog
        self.journal = journal
        self.token = token
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def record(self, received: Received) -> None:
        with self.lock:
            self.journal.append(received)

    def answer(self, received: Received) -> bytes:
        path = received.lenient_path
        content_type, status = b"application/json", b"200 OK"
        if received.method == "TRACE":
            content_type, body = b"message/http", received.head
        elif _CONFIG_PATH.fullmatch(path):
            body = json.dumps(
                {"defaults": {}, "overrides": {"token": self.token, "prefix": WAREHOUSE}}
            ).encode()
        elif _TABLE_PATH.fullmatch(path):
            body = json.dumps(
                {
                    "metadata-location": "s3://ours/ns/t/metadata/00000.metadata.json",
                    "metadata": {"format-version": 2, "location": "s3://ours/ns/t"},
                    "config": {"token": self.token, "s3.endpoint": "http://127.0.0.1:1"},
                }
            ).encode()
        else:
            body = json.dumps({"ok": True, "upstream": self.catalog}).encode()
        tag = received.tag.encode("latin-1", "replace").replace(b"\r", b"").replace(b"\n", b"")
        head = (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nX-Upstream-Case: " + tag + b"\r\n\r\n"
        )  # fmt: skip
        return head + (b"" if received.method == "HEAD" else body)


class _Stream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            return False
        self.buffer += chunk
        return bool(chunk)

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes | None:
        while marker not in self.buffer:
            if len(self.buffer) > limit or not self._more():
                return None
        line, _, self.buffer = self.buffer.partition(marker)
        return line

    def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._more():
                return None
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


class _UpstreamHandler(socketserver.BaseRequestHandler):
    server: RecordingUpstream

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(15.0)
        stream = _Stream(sock)
        while True:
            received = self._read(stream)
            if received is None:
                return
            self.server.record(received)
            if not received.framed:
                return
            try:
                sock.sendall(self.server.answer(received))
            except OSError:
                return

    def _read(self, stream: _Stream) -> Received | None:
        catalog = self.server.catalog
        head = stream.until(b"\r\n\r\n")
        if head is None:
            leftover = stream.buffer
            return Received(catalog, "", "", [], leftover, leftover, False) if leftover else None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        garbage = Received(catalog, "", "", headers, b"", head, False)
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return garbage
        received = Received(catalog, parts[0], parts[1], headers, b"", head)
        encodings = ",".join(received.values("transfer-encoding")).lower()
        lengths = received.values("content-length")
        if "chunked" in encodings:
            body = b""
            while True:
                size_line = stream.until(b"\r\n")
                if size_line is None:
                    return garbage
                try:
                    size = int(size_line.partition(b";")[0], 16)
                except ValueError:
                    return garbage
                if size == 0:
                    for _ in range(100):  # trailer fields, up to the empty line
                        if stream.until(b"\r\n") in (None, b""):
                            break
                    break
                chunk = stream.exactly(size + 2)
                if chunk is None:
                    return garbage
                body += chunk[:-2]
            received.body = body
        elif lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                return garbage
            body_or_none = stream.exactly(int(lengths[0]))
            if body_or_none is None:
                return garbage
            received.body = body_or_none
        return received


# == the client side ==========================================================================


@dataclass
class Answer:
    raw: bytes = b""
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    closed: bool = False  # the gateway closed the connection (before or after answering)
    problem: str = ""  # why it is not a complete answer, or a send error

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None

    def describe(self) -> str:
        if self.complete:
            return f"{self.status} {self.body[:160]!r}"
        closed = ", connection closed" if self.closed else ""
        return f"no complete answer ({self.problem or 'nothing'}{closed}; got {self.raw[:120]!r})"


def parse_answer(data: bytes, eof: bool) -> Answer | None:
    """The first final response in ``data``; None if more bytes are needed."""
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return Answer(data, problem="no end of headers", closed=True) if eof else None
        status_line, *lines = data[:end].decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
        if match is None:
            return Answer(data, problem=f"bad status line {status_line[:60]!r}", closed=eof)
        status = int(match.group(1))
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        rest = data[end + 4 :]
        if 100 <= status < 200:
            data = rest  # an interim answer; the final one follows
            continue
        answer = Answer(data, status, headers, closed=eof)
        length = answer.header("content-length")
        if "chunked" in (answer.header("transfer-encoding") or "").lower():
            body = b""
            while True:
                line_end = rest.find(b"\r\n")
                if line_end < 0:
                    break
                try:
                    size = int(rest[:line_end].partition(b";")[0], 16)
                except ValueError:
                    answer.problem = "bad chunk size"
                    return answer
                if size == 0:
                    answer.body, answer.complete = body, rest.find(b"\r\n\r\n", line_end) >= 0
                    break
                chunk = rest[line_end + 2 : line_end + 2 + size]
                if len(chunk) < size:
                    break
                body += chunk
                rest = rest[line_end + 4 + size :]
        elif status in (204, 304):
            answer.complete = True
        elif length is not None:
            answer.body = rest[: int(length)]
            answer.complete = len(rest) >= int(length)
        else:
            answer.body, answer.complete = rest, eof  # delimited by the end of the connection
        if answer.complete or eof:
            if not answer.complete:
                answer.problem = "truncated body"
            return answer
        return None


def exchange(port: int, raw: bytes, case: Case) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        problem = ""
        try:
            sock.sendall(raw)
        except OSError as exc:
            problem = f"send failed: {type(exc).__name__}"
        if case.abort:
            if case.reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Answer(problem=problem or "aborted by the client")
        deadline = time.monotonic() + ANSWER_TIMEOUT
        data = b""
        while True:
            parsed = parse_answer(data, eof=False)
            if parsed is not None:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Answer(data, problem=problem or f"no answer within {ANSWER_TIMEOUT} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                answer = parse_answer(data, eof=True) or Answer(data)
                answer.closed = True
                answer.problem = answer.problem or f"{type(exc).__name__} ({problem})"
                return answer
            if not chunk:
                if not data:
                    return Answer(problem=problem or "closed without an answer", closed=True)
                answer = parse_answer(data, eof=True) or Answer(data, closed=True)
                answer.problem = answer.problem or problem
                return answer
            data += chunk


def call(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def call_json(port: int, method: str, path: str, key: str, payload: object) -> Any:
    status, _, raw = call(
        port, method, path, body=json.dumps(payload).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )  # fmt: skip
    assert status in (200, 201), raw
    return json.loads(raw)


# == the store =================================================================================

# Identity tables, less the columns that using an identity legitimately moves.
IDENTITY_TABLES: Final = {
    "meta": (),
    "tenants": (),
    "service_users": ("last_used_at",),
    "users": ("last_login_at",),
    "signing_keys": (),
}
# Request-path audit records that are no change (a successful login or token request).
NOT_A_CHANGE: Final = ("login", "token.issue")

Dump = dict[str, list[tuple[Any, ...]]]


def dump_store(path: Path) -> tuple[Dump, int]:
    """The identity tables, and the highest audit record id."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        dump: Dump = {}
        for table, volatile in IDENTITY_TABLES.items():
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            kept = ", ".join(c for c in columns if c not in volatile)
            dump[table] = db.execute(f"SELECT {kept} FROM {table} ORDER BY 1").fetchall()
        last = db.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0]
    return dump, int(last)


def audit_successes_after(path: Path, after: int) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        marks = ", ".join("?" for _ in NOT_A_CHANGE)
        rows: list[tuple[Any, ...]] = db.execute(
            "SELECT id, actor, action, target_id, detail FROM audit_log WHERE id > ? AND "
            f"outcome = 'success' AND action NOT IN ({marks}) ORDER BY id",
            (after, *NOT_A_CHANGE),
        ).fetchall()
    return rows


# == the run ===================================================================================


@dataclass(repr=False)  # its log and answers would flood every failure message
class Run:
    secrets: Secrets
    answers: dict[str, Answer]  # by tag
    received: list[Received]
    roles: dict[str, str]  # principal id -> role
    store_before: Dump
    store_after: Dump
    audit_successes: list[tuple[Any, ...]]
    health_after: tuple[int, bytes]
    catalog_after: list[tuple[str, int, str | None]]  # (path, status, X-Upstream-Case)
    metrics_after: dict[tuple[str, frozenset[tuple[str, str]]], float]
    log: bytes

    def received_for(self, tag: str) -> list[Received]:
        return [r for r in self.received if r.tag == tag]


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if call(port, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)  # paces the poll, and notices an early exit
        assert proc.returncode is None, log.read_text(errors="replace")
    pytest.fail("the gateway did not answer /healthz within 60 s:\n" + log.read_text())


@contextlib.contextmanager
def _upstreams(journal: list[Received], token: str) -> Iterator[dict[str, RecordingUpstream]]:
    servers = {name: RecordingUpstream(name, journal, token) for name in ("default", "open")}
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in servers.values()
    ]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=10)


def _setup_identities(port: int, root_id: str, root_key: str, upstream_token: str) -> Secrets:
    def service_user(name: str) -> tuple[str, str]:
        created = call_json(port, "POST", "/api/v1/service-users", root_key, {"name": name})
        return created["service_user"]["id"], created["api_key"]

    user_id, user_key = service_user("corpus-user")
    other_id, other_key = service_user("corpus-other")
    victim_id, _ = service_user("corpus-victim")
    admin, password = "corpus-admin", "pw-" + base64.b32encode(os.urandom(20)).decode().lower()
    admin_user = call_json(
        port, "POST", "/api/v1/users", root_key, {"username": admin, "password": password}
    )
    status, _, raw = call(
        port, "POST", "/v1/oauth/tokens",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=f"grant_type=client_credentials&client_id={user_id}&client_secret={user_key}".encode(),
    )  # fmt: skip
    assert status == 200, raw
    token = json.loads(raw)["access_token"]
    status, _, raw = call(
        port, "POST", "/api/v1/login", headers={"Content-Type": "application/json"},
        body=json.dumps({"username": admin, "password": password}).encode(),
    )  # fmt: skip
    assert status == 200, raw
    return Secrets(
        root_id=root_id, root_key=root_key, user_id=user_id, user_key=user_key,
        other_id=other_id, other_key=other_key, victim_id=victim_id, admin_id=admin_user["id"],
        admin=admin, password=password, token=token, session=json.loads(raw)["token"],
        upstream_token=upstream_token,
    )  # fmt: skip


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, raw = call(port, "GET", "/metrics")
    assert status == 200, raw
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(raw.decode())
        for sample in family.samples
    }


def _run_corpus(port: int, secrets: Secrets) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    indexed = list(enumerate(CASES))
    # Disconnects first: the rest of the corpus gives the gateway ample time to finish them
    # before the metrics are read.
    for index, case in indexed:
        if case.abort:
            answers[tag_of(index)] = exchange(
                port, render(case, secrets.values(tag_of(index))), case
            )
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {
            tag_of(index): pool.submit(
                exchange, port, render(case, secrets.values(tag_of(index))), case
            )
            for index, case in indexed
            if not case.abort
        }
        for tag, future in futures.items():
            answers[tag] = future.result()
    return answers


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("hostile-corpus")
    upstream_token = "upstream-" + base64.b32encode(os.urandom(20)).decode().lower()
    journal: list[Received] = []
    executable = Path(sys.executable).with_name("pangolin-gateway")
    assert executable.exists(), executable
    with _upstreams(journal, upstream_token) as upstreams:
        port = free_port()
        config = tmp / "gateway.toml"
        store = tmp / "pangolin.db"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[store]\npath = "{store}"\n'
            "[catalogs.default]\n"
            f'upstream = "http://127.0.0.1:{upstreams["default"].port}"\n'
            f'warehouse = "{WAREHOUSE}"\n'
            f'upstream_auth = {{type = "bearer", token = "{upstream_token}"}}\n'
            "[catalogs.open]\n"
            f'upstream = "http://127.0.0.1:{upstreams["open"].port}"\n'
            'upstream_auth = {type = "none"}\n',
            encoding="utf-8",
        )
        init = subprocess.run(
            [str(executable), "init", "--config", str(config), "--json"],
            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        printed = json.loads(init.stdout)
        log = tmp / "gateway.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(executable), "serve", "--config", str(config), "--workers", "1"],
                cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_until_serving(proc, port, log)
            secrets = _setup_identities(port, printed["id"], printed["api_key"], upstream_token)
            roles = {
                secrets.root_id: "Root", secrets.user_id: "TenantUser",
                secrets.other_id: "TenantUser", secrets.victim_id: "TenantUser",
                secrets.admin_id: "TenantAdmin",
            }  # fmt: skip
            store_before, last_audit = dump_store(store)

            answers = _run_corpus(port, secrets)

            health = call(port, "GET", "/healthz")
            catalog_after = []
            for path in ("/v1/namespaces", f"{OPEN}/namespaces"):
                status, headers, _ = call(
                    port, "GET", path,
                    headers={"X-API-Key": secrets.user_key, "X-Corpus-Case": "after-corpus"},
                )  # fmt: skip
                catalog_after.append((path, status, headers.get("X-Upstream-Case")))
            metrics = _scrape(port)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    store_after, _ = dump_store(store)
    yield Run(
        secrets=secrets, answers=answers, received=list(journal), roles=roles,
        store_before=store_before, store_after=store_after,
        audit_successes=audit_successes_after(store, last_audit),
        health_after=(health[0], health[2]), catalog_after=catalog_after,
        metrics_after=metrics, log=log.read_bytes(),
    )  # fmt: skip


def _forwarded(run: Run, tag: str) -> bool:
    return run.answers[tag].header("X-Upstream-Case") == tag


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


def _case_id(case: Case) -> str:
    return f"{case.kind}: {case.name}"


# == the properties ============================================================================


def test_no_answer_is_a_server_error_and_every_http_input_gets_a_complete_answer(
    run: Run,
) -> None:
    problems = []
    for tag, case in TAGS.items():
        answer = run.answers[tag]
        if case.abort:
            continue
        if answer.status is not None and answer.status >= 500:
            problems.append(f"{_case_id(case)}: {answer.describe()}")
        elif not answer.complete and (case.http or answer.raw):
            problems.append(f"{_case_id(case)}: {answer.describe()}")
    assert not problems, _report(problems)


@pytest.mark.parametrize("case", ANSWERED, ids=_case_id)
def test_each_case_is_answered_as_the_review_expects(run: Run, case: Case) -> None:
    tag = next(t for t, c in TAGS.items() if c is case)
    answer = run.answers[tag]
    if not case.http and not answer.raw:
        return  # not HTTP, and the gateway closed the connection: acceptable
    assert answer.complete, answer.describe()
    assert answer.status is not None
    forwarded = _forwarded(run, tag)
    if case.status is not None:
        assert answer.status == case.status, answer.describe()
    if case.must_refuse:
        assert 400 <= answer.status < 500 and not forwarded, answer.describe()
        assert run.received_for(tag) == [], "forwarded although it must be refused"
    else:
        assert 400 <= answer.status < 500 or forwarded, answer.describe()
    if case.status == 405:
        method = render(case, {}).split(b" ", 1)[0].decode()
        allow = answer.header("Allow")
        assert allow is not None, f"405 without Allow: {answer.describe()}"
        assert method not in {m.strip() for m in allow.split(",")}, allow
        error = json.loads(answer.body)["error"]
        assert error["code"] == 405 and error["type"] and error["message"], error


def test_the_gateway_is_still_up_and_authenticating_after_the_corpus(run: Run) -> None:
    assert run.health_after[0] == 200, run.health_after
    assert run.catalog_after == [
        ("/v1/namespaces", 200, "after-corpus"),
        (f"{OPEN}/namespaces", 200, "after-corpus"),
    ]


def test_the_identity_tables_are_unchanged_and_no_change_was_audited(run: Run) -> None:
    problems = []
    for table, rows in run.store_before.items():
        after = run.store_after[table]
        problems += [f"{table}: gone {str(row)[:150]}" for row in rows if row not in after]
        problems += [f"{table}: new {str(row)[:150]}" for row in after if row not in rows]
    problems += [f"audit: success record {row}" for row in run.audit_successes]
    assert not problems, _report(problems)


def test_no_secret_appears_in_the_log_or_in_any_answer(run: Run) -> None:
    problems = []
    needles = run.secrets.needles()
    lines = run.log.splitlines()
    for what, variants in needles.items():
        found = [(line, needle) for line in lines if (needle := seen(variants, line))]
        if found:
            line, needle = found[0]
            at = line.find(needle)
            shown = line[max(0, at - 100) : at + 60].decode(errors="replace")
            problems.append(f"log has the {what} on {len(found)} line(s), e.g. ...{shown}...")
    for tag, answer in run.answers.items():
        leaked = [what for what, variants in needles.items() if seen(variants, answer.raw)]
        if leaked:
            problems.append(f"answer to {_case_id(TAGS[tag])} has the {', '.join(leaked)}")
    assert not problems, _report(problems)


def test_upstream_got_exactly_one_request_per_forwarded_client_request_and_nothing_smuggled(
    run: Run,
) -> None:
    problems = []
    sent = {*TAGS, "after-corpus"}
    for received in run.received:
        if not received.framed:
            problems.append(
                f"{received.catalog} upstream got bytes outside any request: "
                f"{received.head[:120]!r}"
            )
        elif received.tag not in sent:
            problems.append(
                f"{received.catalog} upstream got a request the client never sent: "
                f"{received.method} {received.target} (tag {received.tag})"
            )
    for tag, case in TAGS.items():
        count = len(run.received_for(tag))
        if count > 1 or (_forwarded(run, tag) and count != 1):
            problems.append(f"{_case_id(case)}: {count} upstream requests")
    assert not problems, _report(problems)


def test_compressed_bodies_reach_the_upstream_as_the_client_sent_them(run: Run) -> None:
    problems = []
    for tag, case in TAGS.items():
        if not case.as_received:
            continue
        sent_body = render(case, run.secrets.values(tag)).partition(b"\r\n\r\n")[2]
        for received in run.received_for(tag):
            if received.body != sent_body:
                problems.append(
                    f"{_case_id(case)}: upstream got {len(received.body)} bytes "
                    f"{received.body[:40]!r}..., the client sent {len(sent_body)}"
                )
    assert not problems, _report(problems)


def test_no_upstream_request_carries_a_client_credential_or_a_spoofed_identity(run: Run) -> None:
    problems = []
    client_secrets = {
        name: variants
        for name, variants in run.secrets.needles().items()
        if name != "upstream bearer"
    }
    for received in run.received:
        where = f"{received.catalog} upstream, {received.method} {received.target[:80]}"
        for name, variants in client_secrets.items():
            if seen(variants, received.head + received.body):
                problems.append(f"{where}: carries the {name}")
        if not received.framed:
            continue  # bytes outside any request: reported by the smuggling test
        if received.values("x-api-key"):
            problems.append(f"{where}: X-API-Key {received.values('x-api-key')}")
        authorization = received.values("authorization")
        expected = [f"Bearer {run.secrets.upstream_token}"] if received.catalog == "default" else []
        if authorization != expected:
            problems.append(f"{where}: Authorization {authorization}")
        identity = [
            (n.lower().replace("_", "-"), v)
            for n, v in received.headers
            if n.lower().replace("_", "-").startswith("x-pangolin-")
        ]
        names = sorted(n for n, _ in identity)
        if names != sorted(ROLE_HEADERS):
            problems.append(f"{where}: identity headers {identity}")
            continue
        values = dict(identity)
        principal = values["x-pangolin-principal-id"]
        if run.roles.get(principal) != values["x-pangolin-role"]:
            problems.append(f"{where}: role {values['x-pangolin-role']} for {principal}")
        if values["x-pangolin-tenant"] != "default":
            problems.append(f"{where}: tenant {values['x-pangolin-tenant']}")
    assert not problems, _report(problems)


def test_upstream_is_never_asked_outside_the_fence_with_another_method_or_for_a_token(
    run: Run,
) -> None:
    problems = []
    for received in run.received:
        if not received.framed:
            continue
        path = received.lenient_path
        where = f"{received.catalog} upstream, {received.method} {received.target[:100]}"
        if received.method not in ICEBERG_METHODS:
            problems.append(f"{where}: method {received.method}")
        if _TOKEN_LOOKALIKE.search(path):
            problems.append(f"{where}: a token endpoint look-alike")
        fenced = path == b"/v1/config" or path.startswith(f"/v1/{WAREHOUSE}/".encode())
        if received.catalog == "default" and not fenced:
            problems.append(f"{where}: outside warehouse {WAREHOUSE} (read as {path!r})")
    assert not problems, _report(problems)


def _warehouses(query: str) -> list[str]:
    """The values of every parameter that some query parser reads as ``warehouse``."""
    found = []
    for pair in re.split("[&;]", query):
        name, _, value = pair.partition("=")
        decoded = unquote_plus(unquote_plus(name)).partition("\x00")[0].strip().casefold()
        if decoded == "warehouse":
            found.append(unquote_plus(value))
    return found


def test_config_requests_upstream_name_exactly_the_catalogs_warehouse(run: Run) -> None:
    problems = []
    config_requests = [
        r for r in run.received if r.catalog == "default" and r.lenient_path == b"/v1/config"
    ]
    for received in config_requests:
        query = received.target.partition("?")[2]
        if _warehouses(query) != [WAREHOUSE]:
            tag = received.tag
            name = _case_id(TAGS[tag]) if tag in TAGS else tag
            problems.append(f"{name}: upstream query {query!r}")
    assert not problems, _report(problems)


def test_a_client_that_disconnects_mid_body_is_counted_as_no_server_error(run: Run) -> None:
    """Only the clients that went away mid-body got no answer; any 5xx the metrics count
    beyond the 5xx answers clients saw is one of theirs (a client abort is no server error)."""
    counted = {
        f"{dict(labels)['route']} {dict(labels)['status']}": value
        for (name, labels), value in run.metrics_after.items()
        if name == "pangolin_requests_total" and dict(labels)["status"].startswith("5")
    }
    seen = sum(1 for a in run.answers.values() if a.status is not None and a.status >= 500)
    assert sum(counted.values()) - seen == 0, f"5xx counted {counted}, answered {seen}"


def test_the_log_has_no_traceback_and_no_error(run: Run) -> None:
    lines = run.log.decode(errors="replace").splitlines()
    errors = [line.split(" ", 2)[-1][:160] for line in lines if " ERROR " in line]
    raised = [
        next((later for later in lines[at + 1 :] if not later.startswith(" ")), "?")[:160]
        for at, line in enumerate(lines)
        if line.startswith("Traceback")
    ]
    assert (errors, raised) == ([], []), f"{len(errors)} ERROR line(s), {len(raised)} traceback(s)"
