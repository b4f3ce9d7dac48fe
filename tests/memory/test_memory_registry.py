"""Policy registry: names, config/components split, errors."""

from __future__ import annotations

import pytest

from reverie.memory import (
    Component,
    MagPolicy,
    declared_components,
    get_policy,
    policy_components,
    policy_names,
    register_policy,
)
from reverie.memory.full import FullConfig
from reverie.memory.policy import POLICIES

PAPER_POLICIES = ["full", "mag", "relic", "retrieval", "window"]


def test_every_paper_policy_is_registered() -> None:
    # A new policy is one more file and its registration; this test needs no edit for it.
    names = policy_names()
    assert set(PAPER_POLICIES) <= set(names) and names == sorted(names)
    for name in names:  # one file per policy, named after it (STYLE §8)
        assert POLICIES.get(name).__module__ == f"reverie.memory.{name}"


def test_learned_components_are_declared_by_their_policies() -> None:
    assert set(policy_components("mag")) == {"memory_model"}
    assert set(policy_components("retrieval")) == {"retrieval_embedder"}
    assert not policy_components("full") and not policy_components("window")
    declared = declared_components()
    assert declared["memory_model"].keyword == "writer"
    assert declared["retrieval_embedder"].keyword == "embed"
    for component in declared.values():
        assert isinstance(component, Component) and callable(component.load)
    directories = [c.directory for c in declared.values()]
    assert len(set(directories)) == len(directories)  # one directory per component


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
