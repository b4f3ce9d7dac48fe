"""`window` (LongLive frame sink + rolling window) and `full` (Self Forcing)."""

from __future__ import annotations

import pytest
import torch
from memory_testing import synthetic_write

from reverie.memory import FullPolicy, WindowConfig, WindowPolicy, get_policy
from reverie.models import KVCache


@pytest.mark.parametrize(("sink", "window"), [(2, 4), (0, 3), (3, 9)])
def test_window_keeps_sink_and_last_frames(sink, window, generator) -> None:
    policy, cache = WindowPolicy(WindowConfig(window_frames=window, sink_frames=sink)), KVCache(2)
    written = 0
    for size in [1, 3, 3, 3, 3, 3, 3, 3]:
        policy.after_write(cache, synthetic_write(cache, size, generator))
        written += size
        if written <= sink + window:
            expected = list(range(written))
        else:
            expected = list(range(sink)) + list(range(written - window, written))
        assert cache.frame_indices == expected
        assert cache.frame_positions().unique().tolist() == [float(i) for i in expected]
    assert policy.num_tokens(cache) == cache.num_tokens == (sink + window) * 16
    assert policy.nbytes(cache) == cache.nbytes


def test_window_defaults_are_longlive_and_validated() -> None:
    policy = get_policy("window")
    assert (policy.config.sink_frames, policy.config.window_frames, policy.max_frames) == (3, 9, 12)
    with pytest.raises(ValueError, match="window_frames"):
        WindowConfig(window_frames=0)
    with pytest.raises(ValueError, match="sink_frames"):
        WindowConfig(sink_frames=-1)


def test_full_keeps_everything(generator) -> None:
    policy, cache = FullPolicy(), KVCache(2)
    for size in [1, 3, 3]:
        policy.after_write(cache, synthetic_write(cache, size, generator))
    assert cache.frame_indices == list(range(7)) and policy.max_frames is None
    assert policy.num_tokens(cache) == 7 * 16 and policy.nbytes(cache) == cache.nbytes
    with pytest.raises(ValueError, match="after_write"):
        policy.after_write(cache, torch.zeros(1, 8, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        policy.after_write(cache, torch.zeros(1, 4, 8, 8))
