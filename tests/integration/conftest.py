# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The multi-host lab as a session fixture (tests/lab/lab.py): up once, always torn down."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "lab"))

import lab as labmod  # noqa: E402


def require_lab() -> None:
    """Skip, saying why, where the lab cannot run (it needs root and a few programs)."""
    reason = labmod.unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab_available():
    """Skips the test where the lab cannot run; for tests that start a lab of their own."""
    require_lab()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A running lab: its state dict (``inventory``, ``hosts``, ``credentials``, ...), torn down at session end."""
    require_lab()
    state_dir = str(tmp_path_factory.mktemp("lab"))
    state = labmod.up(state_dir)
    try:
        yield state
    finally:
        report = labmod.down(state_dir)
        assert not report["leftovers"], report
