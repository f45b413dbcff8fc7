"""``pangolin-admin``: manage service users, users and tenants of a running gateway."""
