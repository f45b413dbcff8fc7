"""``python -m gateway`` is ``pangolin-gateway``."""

from gateway.cli import main

main()
