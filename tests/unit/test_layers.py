"""The package's import structure: no cycles (the layer contracts themselves are import-linter's,
run by ``make lint``; see setup.cfg)."""

from __future__ import annotations

import subprocess
import sys

import grimp


def test_no_module_of_the_gateway_imports_itself_through_others() -> None:
    graph = grimp.build_graph("gateway", exclude_type_checking_imports=True)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.find_shortest_chain(importer=imported, imported=module)
        }
    )
    assert cycles == []


def test_the_request_state_keys_import_nothing_of_the_gateway_at_run_time() -> None:
    # Every handler imports gateway.state: it must not drag in the store, the proxy ...
    code = (
        "import sys, gateway.state; "
        "print(sorted(m for m in sys.modules if m.startswith('gateway')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['gateway', 'gateway.state']"
