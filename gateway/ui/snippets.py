"""Ready-to-paste client settings for a service user's key: PyIceberg, curl, DuckDB.

Shown once, beside a new key (the UI's key dialog, ``make run``); the shapes are the ones the
client matrix tests (README, Clients)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("ClientSnippets", "snippets")


@dataclass(frozen=True, slots=True)
class ClientSnippets:
    catalog: str
    pyiceberg: str
    curl: str
    duckdb: str


def snippets(base_url: str, catalog: str, user_id: str, api_key: str) -> ClientSnippets:
    uri = f"{base_url}/v1/{catalog}"
    token_uri = f"{uri}/v1/oauth/tokens"
    pyiceberg = (
        "from pyiceberg.catalog import load_catalog\n\n"
        "catalog = load_catalog(\n"
        '    "pangolin",\n'
        "    **{\n"
        '        "type": "rest",\n'
        f'        "uri": "{uri}/",\n'
        f'        "credential": "{user_id}:{api_key}",\n'
        f'        "oauth2-server-uri": "{token_uri}",\n'
        '        "scope": "catalog",\n'
        "    },\n"
        ")\n"
        "print(catalog.list_namespaces())\n"
    )
    curl = f'curl -H "X-API-Key: {api_key}" {uri}/v1/namespaces\n'
    duckdb = (
        f"CREATE SECRET pangolin (TYPE iceberg, CLIENT_ID '{user_id}',\n"
        f"    CLIENT_SECRET '{api_key}', OAUTH2_SERVER_URI '{token_uri}');\n"
        f"ATTACH '' AS lake (TYPE iceberg, ENDPOINT '{uri}', SECRET pangolin);\n"
        "SHOW ALL TABLES;\n"
    )
    return ClientSnippets(catalog=catalog, pyiceberg=pyiceberg, curl=curl, duckdb=duckdb)
