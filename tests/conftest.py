import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HUMWATCH_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the command line caches embeddings under $HUMWATCH_CACHE: keep the tests' out of the home folder,
# in a folder of their own that goes when the test run ends
if "HUMWATCH_CACHE" not in os.environ:
    os.environ["HUMWATCH_CACHE"] = tempfile.mkdtemp(prefix="humwatch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HUMWATCH_CACHE"], ignore_errors=True)
# --precision auto (the default) is bf16 on CPUs with native bf16: pin it to fp32 so that the tests'
# numbers are the same on every machine (tests/test_precision.py sets it both ways)
os.environ.setdefault("HUMWATCH_BF16", "0")

# Hypothesis draws the same examples on every run (CI must not fail by the luck of a draw); look
# further with HYPOTHESIS_PROFILE=explore, which draws anew each time
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("repeatable", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ImportError:  # the dev extra is not installed: the property tests skip themselves
    pass

# Tests use tiny models: one thread is faster than two fighting over the cores (and leaves the
# second core to the other test process under xdist).
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tone_clip():
    """A 10 s, 16 kHz mono test signal: two tones, an amplitude modulation and a little noise."""
    sr = 16000
    t = np.arange(10 * sr) / sr
    rng = np.random.default_rng(0)
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.3 * np.sin(2 * np.pi * 2 * t))
    y += 0.1 * np.sin(2 * np.pi * 3100 * t) + 0.01 * rng.standard_normal(t.size)
    return y.astype(np.float32)


# the service's real parts (monitors, a live server, PostgreSQL): fixtures shared by its test files
from service_fixtures import browser, live_service, postgres, service_monitors  # noqa: E402,F401
