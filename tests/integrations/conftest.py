"""tests/integrations check arpo_kernels.integrations against the installed TRL and verl, so they run in the
peer venv (`make test-peers`, part of `make test`). Where a library is not importable (the project's own
.venv) the tests that need it are not collected and the run says so at its end; with ARPO_REQUIRE_PEERS=1
(`make test-peers`) a missing library is an error instead."""
import importlib.util
import os

NEEDS = {"trl": ["test_trl.py"], "verl": ["test_verl.py"]}
MISSING = [name for name in NEEDS if importlib.util.find_spec(name) is None]
if MISSING and os.environ.get("ARPO_REQUIRE_PEERS") == "1":
    raise ImportError(f"ARPO_REQUIRE_PEERS=1 but {', '.join(MISSING)} cannot be imported: run `make peers` and "
                      "use .venv-peers/bin/python")
collect_ignore = [path for name in MISSING for path in NEEDS[name]]


def pytest_terminal_summary(terminalreporter):
    if MISSING:
        terminalreporter.write_line(f"tests/integrations: {', '.join(collect_ignore)} not collected: "
                                    f"{', '.join(MISSING)} not importable here (`make test-peers` runs them)")
