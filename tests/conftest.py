import atexit
import os
import shutil
import tempfile

# every test session gets its own disk cache, so runs never see stale artifacts; it is
# removed at exit (it holds every test model's weights: ~1.3 GB per session)
if "EMBER_CACHE_DIR" not in os.environ:
    os.environ["EMBER_CACHE_DIR"] = tempfile.mkdtemp(prefix="ember-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EMBER_CACHE_DIR"], ignore_errors=True)

# every kernel's loop IR is verified before it is translated (ember.codegen.loop_ir.verify)
os.environ.setdefault("EMBER_VERIFY", "1")


# the longest test files (the conformance suite's 4-minute setup, the narrower-target reruns):
# with a file per xdist worker, one of these started last is the run's tail
_LONGEST_FIRST = ("tests/conformance/test_suite.py", "tests/test_targets.py")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda it: 0 if it.nodeid.startswith(_LONGEST_FIRST) else 1)    # stable: order kept within
