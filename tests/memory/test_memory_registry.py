"""Policy registry: names, config/components split, errors."""

from __future__ import annotations

import pytest

from reverie.memory import MagPolicy, get_policy, policy_names, register_policy
from reverie.memory.full import FullConfig


def test_every_paper_policy_is_registered() -> None:
    assert policy_names() == ["full", "mag", "relic", "retrieval", "window"]


def test_unknown_names_and_settings_are_errors() -> None:
    with pytest.raises(KeyError, match="known"):
        get_policy("lru")
    with pytest.raises(TypeError):
        get_policy("window", window=3)
    with pytest.raises(KeyError, match="already registered"):
        register_policy("full")(type("Again", (), {"config_class": FullConfig}))


def test_keywords_split_into_config_and_components() -> None:
    writer = object()
    policy = get_policy("mag", writer=writer, max_frames=8)
    assert isinstance(policy, MagPolicy) and policy.writer is writer
    assert policy.config.max_frames == 8
    with pytest.raises(TypeError, match="MagConfig"):
        MagPolicy(config=FullConfig())
