"""Real parts: SeaweedFS catalogs and the real clients (PyIceberg, DuckDB, iceberg-js,
pangolin-admin) through the gateway."""
