"""The ``pangolin-admin`` command group.

Its commands talk to a gateway's management API over HTTP; they arrive with that API.
"""

from __future__ import annotations

import click

from gateway import __version__

__all__ = ("main",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pangolin-admin")
def main() -> None:
    """Administer a Pangolin Gateway: service users, users, tenants, audit."""
