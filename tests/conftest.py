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
