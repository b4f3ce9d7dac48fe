"""KV-cache storage cost per streamed block: the preallocated `KVCache` vs the concatenating
storage it replaced (issue 11), for a rolling window (sink + window) at several cache sizes.

Per block, both do what the engine and the `window` policy do between forwards: append one
latent frame's keys and values to every layer, then drop the oldest frame after the sink. The
old storage concatenated every layer's whole cache on append and gathered it on eviction
(O(cache) per block); the new one writes into spare capacity and moves the sink (O(block)).
Keys are appended already rotated on both sides (`with_rope=True`), so the table isolates
storage; RoPE applied once at write instead of per forward is a separate saving of the engine,
measured by `reverie eval speed`. Reported: median microseconds per block over `--blocks`
timed blocks (at most 10 at Wan shapes) after the window has filled, and the ratio old / new.

    python benchmarks/kv_storage.py --out benchmarks/results/kv_storage.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch

from reverie.io import atomic_write_json
from reverie.memory.window import sink_and_window_slots
from reverie.models import CachedFrame, KVCache

SINK = 3


class ConcatenatingCache:
    """The storage before issue 11: `torch.cat` on append, `index_select` on eviction."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.positions: torch.Tensor | None = None
        self.frames: list[CachedFrame] = []

    def append(self, keys, values, positions, frames) -> None:
        def cat(old, new, dim=2):
            return new if old is None else torch.cat([old, new], dim=dim)

        for i in range(len(self.keys)):
            self.keys[i] = cat(self.keys[i], keys[i])
            self.values[i] = cat(self.values[i], values[i])
        self.positions = cat(self.positions, positions, dim=0)
        self.frames.extend(frames)

    def select_frames(self, slots) -> None:
        starts, total = [], 0
        for frame in self.frames:
            starts.append(total)
            total += frame.num_tokens
        index = torch.cat(
            [torch.arange(starts[s], starts[s] + self.frames[s].num_tokens) for s in slots]
        )
        for i in range(len(self.keys)):
            self.keys[i] = self.keys[i].index_select(2, index)
            self.values[i] = self.values[i].index_select(2, index)
        self.positions = self.positions.index_select(0, index)
        self.frames = [self.frames[s] for s in slots]


def time_blocks(cache, window: int, shape: tuple[int, ...], blocks: int, dtype) -> float:
    """Median seconds per block (append one frame + evict) once the cache holds its window."""
    layers, heads, (rows, cols), dim = shape
    tokens = rows * cols
    frame_k = [torch.randn(1, heads, tokens, dim, dtype=dtype) for _ in range(layers)]
    frame_v = [torch.randn(1, heads, tokens, dim, dtype=dtype) for _ in range(layers)]
    times = []
    for index in range(SINK + window + blocks):
        positions = torch.zeros(tokens, 3)
        positions[:, 0] = index
        tic = time.perf_counter()
        if isinstance(cache, KVCache):
            cache.append(
                frame_k, frame_v, positions, [CachedFrame(index, rows, cols)], with_rope=True
            )
        else:
            cache.append(frame_k, frame_v, positions, [CachedFrame(index, rows, cols)])
        if len(cache.frames) > SINK + window:
            cache.select_frames(sink_and_window_slots(len(cache.frames), SINK, window))
        elapsed = time.perf_counter() - tic
        if index >= SINK + window:
            times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="JSON to write")
    parser.add_argument("--blocks", type=int, default=60, help="timed blocks per case")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [  # (name, (layers, heads, token grid of a latent frame, head dim), windows)
        ("tiny-patch4 (the default model)", (8, 4, (4, 4), 64), (9, 45, 189)),
        ("Wan2.1-1.3B shapes at 480x832, 8 of 30 layers", (8, 12, (30, 52), 128), (9,)),
    ]
    rows = []
    for name, shape, windows in cases:
        for window in windows:
            blocks = args.blocks if shape[2][0] * shape[2][1] <= 64 else min(args.blocks, 10)
            old = time_blocks(ConcatenatingCache(shape[0]), window, shape, blocks, torch.bfloat16)
            new = time_blocks(KVCache(shape[0]), window, shape, blocks, torch.bfloat16)
            rows.append(
                {
                    "case": name,
                    "shape": dict(
                        zip(("layers", "heads", "token_grid", "head_dim"), shape, strict=True)
                    ),
                    "cache_frames": SINK + window,
                    "timed_blocks": blocks,
                    "old_us_per_block": 1e6 * old,
                    "new_us_per_block": 1e6 * new,
                    "old_over_new": old / new,
                }
            )
            r = rows[-1]
            print(
                f"{name:<48} {r['cache_frames']:4d} frames  old {r['old_us_per_block']:9.0f} us"
                f"  new {r['new_us_per_block']:8.0f} us  x{r['old_over_new']:.1f}"
            )
    result = {
        "benchmark": "kv_storage",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "blocks": args.blocks,
        "rows": rows,
    }
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
