import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from debian import Hosts  # noqa: E402
from wharf import Wharf  # noqa: E402


@pytest.fixture(scope="session")
def wharf(tmp_path_factory):
    """One worker for the session, with 10 MB blob limit so 413 is testable."""
    w = Wharf(tmp_path_factory.mktemp("wharf-state"), extra_vars={"MAX_BLOB_BYTES": "10000000"})
    yield w
    w.stop()


@pytest.fixture
def admin(wharf):
    return wharf.admin


_counter = [0]


@pytest.fixture
def unique():
    """A fresh short name for sites and hostnames in each test."""
    _counter[0] += 1
    return f"t{_counter[0]}"


@pytest.fixture(scope="module")
def hosts():
    """Test hostnames mapped to 127.0.0.1 in /etc/hosts for one module, removed afterwards."""
    h = Hosts()
    yield h
    h.cleanup()
