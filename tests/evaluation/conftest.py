"""Fixtures of the evaluation tests (CPU, seconds)."""

from __future__ import annotations

import pytest
from evaluation_testing import make_tiny_episode

from reverie.evaluation.revisit_episode import RevisitEpisode


@pytest.fixture
def tiny_episode() -> RevisitEpisode:
    """17 synthetic frames: memorize 0..4, generate 5..16; frames 13..16 revisit 3..0."""
    return make_tiny_episode()
