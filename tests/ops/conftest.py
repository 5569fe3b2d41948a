import os
import sys

# Test the ember package of this checkout, also when pytest is launched as `pytest` (which,
# unlike `python -m pytest`, does not put the working directory on sys.path).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


def pytest_report_header(config):
    from .harness import ENGINE

    return f"ember conformance: engine under test = {ENGINE} (EMBER_TEST_ENGINE)"
