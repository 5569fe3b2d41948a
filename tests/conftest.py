import os
import tempfile

# every test session gets its own disk cache, so runs never see stale artifacts
os.environ.setdefault("EMBER_CACHE_DIR", tempfile.mkdtemp(prefix="ember-test-cache-"))
