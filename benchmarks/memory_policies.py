"""Memory policies on the `tiny` preset (CPU): streaming latency and cache size over a stream.

Setting (the tiny recipe): 64x64 video at 16 fps -> Wan VAE latents 16 x 8 x 8 (8x spatial),
one latent frame per 4 video frames, so 10 s / 20 s / 60 s of video = 40 / 80 / 240 latent
frames; patch (1, 2, 2) -> 16 tokens per latent frame. The `tiny` DiT (8 layers, 256-d, 4
heads) is block-causal with Self Forcing blocks of 3 latent frames and receives text (16 x 384
MiniLM-sized states), actions and poses. Each **block** = 4 denoising passes (flow times 1,
0.75, 0.5, 0.25) + 1 cache-write pass on the clean block (`write_block`: writer forward +
`policy.after_write`). Random weights and inputs: this measures cost, not quality.

Reported per policy (fp32, batch 1):
- `block_ms_median` (all blocks of the stream), `frame_ms_median` = block / 3 (one streaming
  step per latent frame), `last10_block_ms_median` (the 10 last blocks: largest cache);
- `forward_ms_median` (one denoising pass) and `write_ms_median` (write pass + policy);
- at 10 s, 20 s, 60 s: `latent_frames` written, `cache_frames` / `cache_tokens` (what the next
  forward attends to besides its own block), `held_tokens` / `held_bytes` (everything the policy
  keeps, e.g. retrieval's offloaded history: `policy.num_tokens/nbytes`).
`mag` writes with a second `tiny` model (the memory model) and the empty prompt;
`retrieval+embedder` (with `--embedder`) embeds frames with an untrained `RetrievalEmbedder`
instead of pooled latents. All policies stream
the same inputs in lockstep (block k of each before block k + 1 of any). Bytes are fp32 K/V
(plus retrieval's embeddings); positions and bookkeeping are not counted.

One intra-op thread by default: the tiny DiT's 48-token chunks gain little from a second
thread, and on a shared 2-core machine a second thread makes timings collapse under contention
(a 48x256 @ 256x1024 Linear took 8.4 ms with 2 threads vs 0.3 ms with 1 while another job ran).
The JSON records the load average before and after the run; compare runs with the same one.

    python benchmarks/memory_policies.py --out benchmarks/results/memory_policies.json
    python benchmarks/memory_policies.py --quick   # 20 s of video (~1 min)
    python benchmarks/memory_policies.py --embedder  # also retrieval with the conv embedder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import date

import torch

from reverie.io import atomic_write_json
from reverie.memory import (
    MemoryPolicy,
    RetrievalEmbedder,
    RetrievalEmbedderConfig,
    get_policy,
    policy_names,
    write_block,
)
from reverie.models import AttentionConfig, AttentionMode, KVCache, WanDiT, get_preset
from reverie.runtime import setup_runtime

FPS, VIDEO_PER_LATENT = 16, 4  # Wan VAE: 4 video frames per latent frame
LATENT_SIZE = 8  # 64x64 video / 8
FRAMES_PER_BLOCK = 3
DENOISING_TIMES = (1.0, 0.75, 0.5, 0.25)
TEXT_LEN = 16
CHECKPOINT_SECONDS = (10, 20, 60)


def build_models() -> tuple[WanDiT, WanDiT]:
    """Generator and MAG memory model: two `tiny` block-causal DiTs."""
    attention = AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=FRAMES_PER_BLOCK)
    config = get_preset("tiny", attention=attention)
    torch.manual_seed(0)
    return WanDiT(config).eval(), WanDiT(config).eval()


def make_policy(variant: str, memory_model: WanDiT, channels: int) -> MemoryPolicy:
    if variant == "mag":
        return get_policy("mag", writer=memory_model)
    if variant == "retrieval+embedder":
        embedder = RetrievalEmbedder(RetrievalEmbedderConfig(in_channels=channels)).eval()
        return get_policy("retrieval", embed=embedder)
    return get_policy(variant)


def conditioning(start: int, frames: int, generator: torch.Generator):
    """Random actions `(1, T_video, 13)` and poses for latent frames [start, start + frames)."""
    video = VIDEO_PER_LATENT * frames - (VIDEO_PER_LATENT - 1) * (start == 0)
    actions = torch.rand(1, video, 13, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(1, video, 3, 3, generator=generator))
    rotation = rotation * torch.linalg.det(rotation).sign()[..., None, None]  # proper rotations
    return actions, (rotation, torch.randn(1, video, 3, generator=generator))


@dataclass
class Stream:
    """One policy's stream: its cache, its inputs' generator (same seed for every policy, so
    all streams see the same noise, text and actions) and its measurements."""

    variant: str
    policy: MemoryPolicy
    cache: KVCache
    generator: torch.Generator
    blocks: list[float] = field(default_factory=list)
    forwards: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    sizes: dict[int, dict] = field(default_factory=dict)


def step(model: WanDiT, stream: Stream, start: int, text, empty) -> None:
    """Generate and write one block of `FRAMES_PER_BLOCK` latent frames at `start`, timed."""
    channels = model.config.in_channels
    shape = (1, FRAMES_PER_BLOCK, channels, LATENT_SIZE, LATENT_SIZE)
    noise = torch.randn(shape, generator=stream.generator)
    actions, poses = conditioning(start, FRAMES_PER_BLOCK, stream.generator)
    cache = stream.cache
    block_start = time.perf_counter()
    x = noise
    for i, t in enumerate(DENOISING_TIMES):  # x_t = (1 - t) x0 + t noise, v = noise - x0
        tic = time.perf_counter()
        v = model(x, torch.full((1,), t), text, actions=actions, poses=poses, cache=cache)
        stream.forwards.append(time.perf_counter() - tic)
        x0 = x - t * v
        t_next = DENOISING_TIMES[i + 1] if i + 1 < len(DENOISING_TIMES) else 0.0
        x = (1 - t_next) * x0 + t_next * noise
    tic = time.perf_counter()
    write_block(
        stream.policy, cache, model, x0, text, empty_context=empty, actions=actions, poses=poses
    )
    stream.writes.append(time.perf_counter() - tic)
    stream.blocks.append(time.perf_counter() - block_start)


def record_sizes(stream: Stream, written: int, tokens_per_frame: int) -> None:
    """Cache and held sizes at the first block boundary after each checkpoint."""
    for seconds in CHECKPOINT_SECONDS:
        if seconds not in stream.sizes and written >= seconds * FPS // VIDEO_PER_LATENT:
            stream.sizes[seconds] = {
                "latent_frames": written,
                "cache_frames": stream.cache.num_frames,
                "cache_tokens": stream.cache.num_tokens,
                "full_history_tokens": written * tokens_per_frame,
                "held_tokens": stream.policy.num_tokens(stream.cache),
                "held_bytes": stream.policy.nbytes(stream.cache),
            }


def run_streams(model, memory_model, variants: list[str], num_frames: int) -> dict:
    """Stream `num_frames` latent frames with every policy **in lockstep** (block k of every
    policy before block k + 1 of any), so load changes on a shared machine hit all alike."""
    cfg = model.config
    text = torch.randn(1, TEXT_LEN, cfg.text_dim, generator=torch.Generator().manual_seed(1))
    empty = torch.zeros(1, TEXT_LEN, cfg.text_dim)
    streams = [
        Stream(
            v,
            make_policy(v, memory_model, cfg.in_channels),
            model.new_cache(),
            torch.Generator().manual_seed(0),
        )
        for v in variants
    ]
    with torch.no_grad():
        for start in range(0, num_frames, FRAMES_PER_BLOCK):
            for stream in streams:
                step(model, stream, start, text, empty)
                written = start + FRAMES_PER_BLOCK
                record_sizes(stream, written, cfg.tokens_per_frame(LATENT_SIZE, LATENT_SIZE))
    return {s.variant: summary(s) for s in streams}


def summary(stream: Stream) -> dict:
    ms = 1000.0
    block = statistics.median(stream.blocks) * ms
    return {
        "block_ms_median": round(block, 2),
        "frame_ms_median": round(block / FRAMES_PER_BLOCK, 2),
        "last10_block_ms_median": round(statistics.median(stream.blocks[-10:]) * ms, 2),
        "forward_ms_median": round(statistics.median(stream.forwards) * ms, 2),
        "write_ms_median": round(statistics.median(stream.writes) * ms, 2),
        "config": {k: str(v) for k, v in vars(stream.policy.config).items()},
        "at_seconds": {str(s): v for s, v in stream.sizes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s of video instead of 60 s")
    parser.add_argument("--embedder", action="store_true", help="add retrieval+embedder")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    setup_runtime(threads=args.threads, log_level="WARNING")
    seconds = 20 if args.quick else max(CHECKPOINT_SECONDS)
    num_frames = seconds * FPS // VIDEO_PER_LATENT
    load_before = os.getloadavg()
    model, memory_model = build_models()
    run_streams(model, memory_model, ["full"], 2 * FRAMES_PER_BLOCK)  # warm-up
    variants = policy_names() + (["retrieval+embedder"] if args.embedder else [])
    result = {
        "benchmark": "memory_policies",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": "tiny",
        "latent": [model.config.in_channels, LATENT_SIZE, LATENT_SIZE],
        "tokens_per_latent_frame": model.config.tokens_per_frame(LATENT_SIZE, LATENT_SIZE),
        "frames_per_block": FRAMES_PER_BLOCK,
        "passes_per_block": f"{len(DENOISING_TIMES)} denoising + 1 cache write",
        "video_seconds": seconds,
        "latent_frames": num_frames,
        "policies": run_streams(model, memory_model, variants, num_frames),
    }
    result["load_average_1_5_15"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
