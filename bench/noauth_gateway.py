"""The gateway for the benchmark's "no client auth" row: the real app, served the real way,
with one seam changed: an authenticator that lets requests carrying no credential through as a
fixed benchmark principal (a presented but bad credential still gets 401). No such switch
exists in the product; this file is the only place that wires one.

    python bench/noauth_gateway.py --config FILE --port PORT
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from multidict import CIMultiDictProxy

from gateway.app import create_app
from gateway.auth.authenticator import ANONYMOUS, Authenticator, AuthOutcome
from gateway.identity.models import Principal, Role
from gateway.observability.log_handlers import configure_logging
from gateway.serve.runner import serve_settings
from gateway.settings import load_settings

_BENCH_PRINCIPAL = AuthOutcome(
    Principal(
        id="bench-anonymous", name="bench-anonymous", type="bench", role=Role.TENANT_USER,
        tenant_id="bench", tenant_name="default", key_generation=0,
    )
)  # fmt: skip


class BenchAuthenticator(Authenticator):
    async def authenticate(
        self, headers: CIMultiDictProxy[str], *, may_read: bool = True
    ) -> AuthOutcome:
        outcome = await super().authenticate(headers, may_read=may_read)
        return _BENCH_PRINCIPAL if outcome is ANONYMOUS else outcome


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config, os.environ)
    return serve_settings(
        settings,
        port=args.port,
        app_factory=functools.partial(create_app, authenticator=BenchAuthenticator),
    )


if __name__ == "__main__":
    sys.exit(main())
