"""A real ``emailrelay supervise`` for the TUI tests, with a downstream sink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import (
    _reachable_tmp_path,  # noqa: F401 - autouse fixture
    daemon_dir,  # noqa: F401 - re-exported for the tests
    spool,  # noqa: F401 - fixture
)
from tests.integration.downstream import downstream_fixture
from tests.integration.test_supervise import Supervised, supervise  # noqa: F401 - fixture

downstream = downstream_fixture()
_ = (os, Path, pytest)
