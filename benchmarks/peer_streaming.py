"""Peer comparison: Reverie's KV-cached streaming vs diffusers' Helios and a cache-less sliding
window over `WanTransformer3DModel`, same tiny transformer, same latents, same frames (CPU).

Shared setting (the shipped default model's shapes, `tiny-patch4`): 64x64 video -> 16 x 16 x 16
latents (4x spatial, 4 video frames per latent frame), patch (1, 4, 4) -> 16 tokens per latent
frame; every transformer has 8 layers, dim 256, 4 heads (head dim 64), FFN 1024, a 256-d time
embedding and reads the same random text states (64 x 384, MiniLM-sized). Random weights and
inputs, fp32, batch 1, no classifier-free guidance, 4 denoising steps at the default model's
flow times (1, 0.9375, 0.833, 0.625: timesteps 1000/750/500/250, shift 5) for every system:
this measures cost, not quality. Each system generates `--warmup` latent frames (untimed: they
fill the context, so the timed frames all run at the full attended context) and then
`--latent-frames` timed ones, one latent frame (4 video frames) per streaming step.

Systems and what their time includes (prompt encoding and VAE decoding are excluded on every
side: precomputed text states, latents out):
- `reverie`: `reverie.diffusion.rollout_block`, the engine's per-step loop (`Session.step`
  without its VAE decode), on a block-causal `WanDiT` (1 latent frame per block) with the
  `window` memory policy (sink 3 + window 9 latent frames, LongLive). Per latent frame: noise,
  4 denoising passes of the frame's 16 tokens reading the KV cache (+ re-noising), 1 cache-write
  pass on the clean frame, the policy's eviction; actions and poses (precomputed per step) go
  through Reverie's action/pose encoders. Attended: 12 cached frames + the frame itself.
- `helios`: diffusers' `HeliosPipeline.__call__` with a random `HeliosTransformer3DModel` of the
  same sizes (rope dims (24, 20, 20) for head dim 64), `HeliosScheduler` (1 stage, Euler, the
  same 4 flow times as `sigmas`), `prompt_embeds` given, `output_type="latent"`,
  `guidance_scale=1`. The pipeline needs no text encoder then, but decodes every chunk with its
  VAE unconditionally: it gets a pass-through stand-in (`decode` returns the latents), so VAE
  time is excluded as on the other sides. Per chunk of `--helios-chunk` latent frames: 4 passes
  over the compressed history (Helios' multi-term memory: first-frame prefix and `1x` frames at
  full resolution, `mid` frames 2x compressed per axis, `long` frames 4x) + the chunk, Euler
  steps, the history bookkeeping. History `--helios-history` long,mid,1x = 8,2,1 + the prefix
  covers 12 past latent frames: the chunk attends to 13 latent frames, as Reverie, in fewer
  tokens (2 + 4 + 32 + 16 = 54). Timed from the end of the last warm-up chunk's denoising
  (pipeline callback) to the call's return.
- `wan_window`: a random `diffusers.WanTransformer3DModel` of the same sizes re-run without a
  cache, as a user without a streaming engine would: per latent frame, 4 full forwards over the
  window [the 12 newest clean frames at t = 0 | the noisy new frame at t] (per-token timesteps,
  the Wan2.2 path of the model; diffusion-forcing style), keeping the new frame's prediction,
  the same x0 / re-noise update as Reverie. Attended: 13 latent frames = 208 tokens (as Reverie).

Peak memory: every (system, repeat) runs in a fresh subprocess with `MALLOC_MMAP_THRESHOLD_=65536`
(large allocations are mmapped and returned on free, so RSS follows live tensors; see
`benchmarks/replay_memory.py`). After building the model and a throwaway 2-frame stream,
`malloc_trim(0)`, reset the kernel's peak counter (`/proc/self/clear_refs` = 5), read `VmRSS`
(baseline), run the measured stream, read `VmHWM`. `stream_peak_mb = VmHWM - baseline` is what
streaming needs on top of the loaded model and runtime (cache / history / window, activations,
the kept output latents); `process_peak_mb` is the absolute peak (runtime and imports included).
Wall time is the median over `--repeats`, the repeats interleaved over systems (repeat r of every
system before repeat r + 1 of any) so load changes on a shared machine hit all alike. Ratios:
Reverie video frames/s over each peer's, peer peak memory over Reverie's; the issue's target is
Reverie >= 3x the faster peer.

    python benchmarks/peer_streaming.py --out benchmarks/results/peer_streaming.json --threads 2
    python benchmarks/peer_streaming.py --latent-frames 4 --warmup 2 --repeats 1 --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from datetime import date
from pathlib import Path

from peak_rss import peak_kb, reset_peak, status_kb

SYSTEMS = ("reverie", "helios", "wan_window")
LATENT_CHANNELS, LATENT_SIZE = 16, 16  # 64x64 video, 4x spatial tokenizer
RESOLUTION = 64
VIDEO_PER_LATENT = 4
TEXT_TOKENS = 64
PREWARM_FRAMES = 2  # throwaway stream before the baseline (lazy allocations, first calls)
SEED = 0
# The tiny transformer shared by all systems (= `tiny-patch4`, the shipped default's DiT).
DIM, FFN_DIM, HEADS, LAYERS, FREQ_DIM, TEXT_DIM = 256, 1024, 4, 8, 256, 384
PATCH = (1, 4, 4)
TARGET = 3.0
PEER_SHAPES = dict(  # diffusers' Wan-family transformer arguments shared by both peers
    num_attention_heads=HEADS,
    attention_head_dim=DIM // HEADS,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    text_dim=TEXT_DIM,
    freq_dim=FREQ_DIM,
    ffn_dim=FFN_DIM,
    num_layers=LAYERS,
)


# ----------------------------------------------------------------------------- systems
def _times() -> tuple[float, ...]:
    """The default model's flow times (timesteps 1000/750/500/250 with shift 5)."""
    from reverie.diffusion import FewStepSchedule

    return FewStepSchedule().times


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_reverie(args: argparse.Namespace):
    """`WanDiT` with the shipped default's config + `window` policy; returns (info, stream)."""
    import torch

    from reverie.diffusion.rollout import BlockInputs, rollout_block
    from reverie.engine.world_model import DEFAULT_MODEL_DIR
    from reverie.memory import get_policy
    from reverie.models import WanDiT, load_checkpoint
    from reverie.models.checkpoints import load_config

    dit_dir = DEFAULT_MODEL_DIR / "dit"
    if args.reverie_weights == "default":
        dit = load_checkpoint(dit_dir, dtype=torch.float32)
    else:
        dit = WanDiT(load_config(dit_dir))
        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():  # zero-initialised layers get weights, as WorldModel.random
            for p in dit.parameters():
                if p.ndim >= 2 and not p.any():
                    p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    dit = dit.eval().requires_grad_(False)
    cfg = dit.config
    sizes = (cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.num_layers, tuple(cfg.patch_size))
    if sizes != (DIM, FFN_DIM, HEADS, LAYERS, PATCH) or cfg.text_dim != TEXT_DIM:
        raise ValueError(f"the default DiT is no longer tiny-patch4: {cfg}")
    fpb = cfg.attention.frames_per_block
    times = _times()
    gen = torch.Generator().manual_seed(SEED + 1)
    text = torch.randn(1, TEXT_TOKENS, cfg.text_dim, generator=gen)

    def conditioning(frame: int):
        video = VIDEO_PER_LATENT * fpb - (VIDEO_PER_LATENT - 1) * (frame == 0)
        actions = torch.rand(1, video, 13, generator=gen)
        rotation, _ = torch.linalg.qr(torch.randn(1, video, 3, 3, generator=gen))
        rotation = rotation * torch.linalg.det(rotation).sign()[..., None, None]
        return BlockInputs(text, None, actions, (rotation, torch.randn(1, video, 3, generator=gen)))

    like = torch.empty(1, fpb, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    policy_probe = get_policy("window")
    context = policy_probe.config.sink_frames + policy_probe.config.window_frames

    def stream(total: int, skip: int) -> float:
        inputs = [conditioning(f) for f in range(0, total, fpb)]  # precomputed, untimed
        policy = get_policy("window")
        policy.reset()
        cache = dit.new_cache()
        noise = torch.Generator().manual_seed(SEED + 2)
        out = []
        first_timed = math.ceil(skip / fpb) * fpb  # the first block after the warm-up
        tic = time.perf_counter()
        with torch.inference_mode():
            for b, start in enumerate(range(0, total, fpb)):
                if start == first_timed:
                    tic = time.perf_counter()
                block = rollout_block(
                    dit,
                    cache,
                    policy,
                    inputs[b],
                    times,
                    like,
                    (start, start + fpb),
                    generator=noise,
                )
                out.append(block.latents)
        return time.perf_counter() - tic

    tokens = cfg.tokens_per_frame(LATENT_SIZE, LATENT_SIZE)
    info = {
        "description": "reverie.diffusion.rollout_block (Session.step's loop) on a block-causal "
        "WanDiT (the shipped default's config) with the `window` memory policy",
        "weights": args.reverie_weights,
        "timing_includes": "per latent frame: noise, 4 denoising passes over the frame's 16 "
        "tokens reading the KV cache (+ re-noising), 1 cache-write pass, window eviction; "
        "action/pose encoders. Excluded: text encoding, VAE decode, pose integration.",
        "frames_per_step": fpb,
        "denoising_steps": len(times),
        "forwards_per_latent_frame": (len(times) + 1) / fpb,
        "attended": {
            "latent_frames": context + fpb,
            "tokens": (context + fpb) * tokens,
            "composition": f"KV cache sink {policy_probe.config.sink_frames} + window "
            f"{policy_probe.config.window_frames} frames + the current block ({fpb})",
        },
        "params": _params(dit),
    }
    return info, stream


def build_wan_window(args: argparse.Namespace):
    """`WanTransformer3DModel` re-run over a sliding window without a cache."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(SEED)
    model = WanTransformer3DModel(
        patch_size=PATCH,
        **PEER_SHAPES,
    ).eval()
    model.requires_grad_(False)
    times = _times()
    window = args.context_frames  # latent frames in one forward, the new one included
    tokens = (LATENT_SIZE // PATCH[1]) * (LATENT_SIZE // PATCH[2])
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(SEED + 1))
    shape = (1, LATENT_CHANNELS, 1, LATENT_SIZE, LATENT_SIZE)

    def stream(total: int, skip: int) -> float:
        gen = torch.Generator().manual_seed(SEED + 2)
        history: list[torch.Tensor] = []  # clean latent frames (1, C, 1, h, w)
        tic = time.perf_counter()
        with torch.inference_mode():
            for f in range(total):
                if f == skip:
                    tic = time.perf_counter()
                past = history[-(window - 1) :] if window > 1 else []
                context = torch.cat(past, dim=2) if past else None
                zeros = torch.zeros(1, len(past) * tokens)
                x = torch.randn(shape, generator=gen)
                for i, t in enumerate(times):
                    inp = x if context is None else torch.cat([context, x], dim=2)
                    step = torch.cat([zeros, torch.full((1, tokens), 1000.0 * t)], dim=1)
                    v = model(inp, step, text, return_dict=False)[0][:, :, -1:]
                    x0 = x - t * v
                    if i + 1 < len(times):
                        t_next = times[i + 1]
                        x = (1 - t_next) * x0 + t_next * torch.randn(shape, generator=gen)
                history.append(x0)
        return time.perf_counter() - tic

    info = {
        "description": "diffusers WanTransformer3DModel re-run over a sliding window, no KV cache",
        "timing_includes": f"per latent frame: {len(times)} full forwards over [the "
        f"{window - 1} newest clean frames at t=0 | the noisy new frame] (per-token "
        "timesteps), keeping the new frame's prediction; x0 / re-noise update as Reverie. "
        "Excluded: text encoding, VAE decode.",
        "frames_per_step": 1,
        "denoising_steps": len(times),
        "forwards_per_latent_frame": len(times),
        "attended": {
            "latent_frames": window,
            "tokens": window * tokens,
            "composition": f"{window - 1} newest clean latent frames + the new frame",
        },
        "params": _params(model),
    }
    return info, stream


def _passthrough_vae(torch_module):
    """Stand-in for `AutoencoderKLWan` in `HeliosPipeline`: `decode` returns the latents (the
    pipeline decodes every chunk even with `output_type="latent"`)."""
    from types import SimpleNamespace

    class PassthroughVAE(torch_module.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(
                scale_factor_temporal=VIDEO_PER_LATENT,
                scale_factor_spatial=RESOLUTION // LATENT_SIZE,
                z_dim=LATENT_CHANNELS,
                latents_mean=[0.0] * LATENT_CHANNELS,
                latents_std=[1.0] * LATENT_CHANNELS,
            )
            self.register_buffer("_anchor", torch_module.zeros(1))  # device / dtype

        @property
        def dtype(self):
            return self._anchor.dtype

        @property
        def device(self):
            return self._anchor.device

        def decode(self, latents, return_dict: bool = True):
            return (latents,)

    return PassthroughVAE()


def helios_history(args: argparse.Namespace) -> list[int]:
    sizes = [int(s) for s in args.helios_history.split(",")]
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"--helios-history takes long,mid,1x frame counts, got {sizes}")
    return sizes


def build_helios(args: argparse.Namespace):
    """`HeliosPipeline` with a random tiny `HeliosTransformer3DModel`."""
    import numpy as np
    import torch
    from diffusers import HeliosPipeline, HeliosScheduler, HeliosTransformer3DModel

    head_dim = DIM // HEADS
    spatial = 2 * (head_dim // 6)  # Wan's RoPE split of the head dim (t, h, w)
    rope_dim = (head_dim - 2 * spatial, spatial, spatial)
    torch.manual_seed(SEED)
    transformer = HeliosTransformer3DModel(
        patch_size=PATCH,
        **PEER_SHAPES,
        rope_dim=rope_dim,
    ).eval()
    transformer.requires_grad_(False)
    scheduler = HeliosScheduler(stages=1, scheduler_type="euler", shift=1.0)
    pipe = HeliosPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_passthrough_vae(torch),
        scheduler=scheduler,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    times = _times()
    sigmas = np.asarray(times, dtype=np.float32)
    chunk = args.helios_chunk
    history = helios_history(args)
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(SEED + 1))
    video_per_chunk = (chunk - 1) * VIDEO_PER_LATENT + 1  # the pipeline's `window_num_frames`

    def stream(total: int, skip: int) -> float:
        chunks, skip_chunks = math.ceil(total / chunk), math.ceil(skip / chunk)
        steps = 0
        tic = [time.perf_counter()]

        def mark(pipeline, i, t, kwargs):  # after every denoising step
            nonlocal steps
            steps += 1
            if steps == skip_chunks * len(times):  # the last warm-up chunk is denoised
                tic[0] = time.perf_counter()
            return {}

        with torch.inference_mode():
            tic[0] = time.perf_counter()
            out = pipe(
                prompt_embeds=text,
                guidance_scale=1.0,
                height=RESOLUTION,
                width=RESOLUTION,
                num_frames=chunks * video_per_chunk,
                num_inference_steps=len(times),
                sigmas=sigmas,
                generator=torch.Generator().manual_seed(SEED + 2),
                output_type="latent",
                max_sequence_length=TEXT_TOKENS,
                callback_on_step_end=mark,
                callback_on_step_end_tensor_inputs=[],
                history_sizes=list(history),
                num_latent_frames_per_chunk=chunk,
                keep_first_frame=True,
            ).frames
        seconds = time.perf_counter() - tic[0]
        if out.shape[2] != chunks * chunk:
            raise RuntimeError(f"Helios made {out.shape[2]} latent frames, not {chunks * chunk}")
        return seconds

    tokens = (LATENT_SIZE // PATCH[1]) * (LATENT_SIZE // PATCH[2])
    long, mid, short = history
    mid_tokens = math.ceil(mid / 2) * tokens // 4
    long_tokens = math.ceil(long / 4) * tokens // 16
    short_tokens = (short + 1) * tokens  # 1x frames + the first-frame prefix
    info = {
        "description": "diffusers HeliosPipeline (multi-term compressed history) with a random "
        "tiny HeliosTransformer3DModel",
        "timing_includes": f"per chunk of {chunk} latent frame(s): {len(times)} passes over the "
        "compressed history + the chunk, Euler steps, history bookkeeping, the pass-through "
        "VAE stand-in. Excluded: text encoding (prompt_embeds given), VAE decode.",
        "frames_per_step": chunk,
        "denoising_steps": len(times),
        "forwards_per_latent_frame": len(times) / chunk,
        "scheduler": "HeliosScheduler(stages=1, euler), sigmas = the shared flow times",
        "rope_dim": list(rope_dim),
        "history_sizes_long_mid_1x": history,
        "attended": {
            "latent_frames": 1 + long + mid + short + chunk,
            "tokens": long_tokens + mid_tokens + short_tokens + chunk * tokens,
            "composition": f"prefix 1 + 1x {short} frames ({short_tokens} tokens), mid {mid} "
            f"frames ({mid_tokens} tokens), long {long} frames ({long_tokens} tokens), "
            f"the chunk {chunk} frame(s) ({chunk * tokens} tokens)",
        },
        "params": _params(transformer),
    }
    return info, stream


BUILDERS = {"reverie": build_reverie, "helios": build_helios, "wan_window": build_wan_window}


def run_case(system: str, args: argparse.Namespace) -> dict:
    """Build one system, stream warmup + latent frames in this (fresh) process, measure."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    info, stream = BUILDERS[system](args)
    stream(PREWARM_FRAMES, 0)  # throwaway: first calls, lazy allocations
    gc.collect()
    method = reset_peak()
    baseline = status_kb("VmRSS")
    seconds = stream(args.warmup + args.latent_frames, args.warmup)
    peak = peak_kb(method)
    return {
        **info,
        "seconds": seconds,
        "stream_peak_mb": round((peak - baseline) / 1024, 1),
        "baseline_mb": round(baseline / 1024, 1),
        "process_peak_mb": round(peak / 1024, 1),
        "memory_method": method,
        "torch_threads": torch.get_num_threads(),
    }


def case_argv(args: argparse.Namespace) -> list[str]:
    """The options a case subprocess needs."""
    return [
        "--latent-frames",
        str(args.latent_frames),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--context-frames",
        str(args.context_frames),
        "--helios-chunk",
        str(args.helios_chunk),
        "--helios-history",
        args.helios_history,
        "--reverie-weights",
        args.reverie_weights,
    ]


def spawn(system: str, args: argparse.Namespace) -> dict:
    """Run `run_case` in a fresh interpreter with a fixed glibc mmap threshold."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(
        [sys.executable, __file__, "--case", system, *case_argv(args)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"error": f"exit {out.returncode}: {out.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- report
def summarise(runs: list[dict], args: argparse.Namespace) -> dict:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"error": errors[0]}
    seconds = [r["seconds"] for r in runs]
    wall = statistics.median(seconds)
    first = runs[0]
    skip = ("seconds", "stream_peak_mb", "baseline_mb", "process_peak_mb")
    frames = args.latent_frames
    if first["frames_per_step"] > 1:  # Helios makes whole chunks
        step = first["frames_per_step"]
        frames = (
            math.ceil((args.warmup + frames) / step) * step - math.ceil(args.warmup / step) * step
        )
    return {
        **{k: v for k, v in first.items() if k not in skip},
        "generated_latent_frames": frames,
        "video_frames": VIDEO_PER_LATENT * frames,
        "wall_s_median": round(wall, 4),
        "wall_s_runs": [round(s, 4) for s in seconds],
        "video_fps": round(VIDEO_PER_LATENT * frames / wall, 2),
        "latent_ms_per_frame": round(1000 * wall / frames, 2),
        "stream_peak_mb": max(r["stream_peak_mb"] for r in runs),
        "baseline_mb": statistics.median(r["baseline_mb"] for r in runs),
        "process_peak_mb": max(r["process_peak_mb"] for r in runs),
    }


def ratios(systems: dict) -> dict:
    ours = systems.get("reverie", {})
    peers = {k: v for k, v in systems.items() if k != "reverie" and "error" not in v}
    if "error" in ours or not peers:
        return {"note": "Reverie or every peer failed; no ratios"}
    out: dict = {
        "fps_reverie_over_peer": {},
        "stream_peak_mb_peer_over_reverie": {},
        "process_peak_mb_peer_over_reverie": {},
    }
    for name, peer in peers.items():
        out["fps_reverie_over_peer"][name] = round(ours["video_fps"] / peer["video_fps"], 2)
        mem = ours["stream_peak_mb"]
        out["stream_peak_mb_peer_over_reverie"][name] = (
            round(peer["stream_peak_mb"] / mem, 2) if mem > 0 else None
        )
        out["process_peak_mb_peer_over_reverie"][name] = round(
            peer["process_peak_mb"] / ours["process_peak_mb"], 2
        )
    faster = max(peers, key=lambda k: peers[k]["video_fps"])
    over = out["fps_reverie_over_peer"][faster]
    out.update(faster_peer=faster, reverie_over_faster_peer=over, target=TARGET)
    out["meets_target"] = over >= TARGET
    return out


def format_table(result: dict) -> str:
    lines = [
        f"{'system':<11} {'video fps':>9} {'ms/latent':>9} {'ctx fr':>6} {'ctx tok':>7} "
        f"{'stream MB':>9} {'proc MB':>8} {'params':>9}"
    ]
    for name, r in result["systems"].items():
        if "error" in r:
            lines.append(f"{name:<11} failed: {r['error'].splitlines()[-1][:80]}")
            continue
        lines.append(
            f"{name:<11} {r['video_fps']:9.2f} {r['latent_ms_per_frame']:9.2f} "
            f"{r['attended']['latent_frames']:6d} {r['attended']['tokens']:7d} "
            f"{r['stream_peak_mb']:9.1f} {r['process_peak_mb']:8.1f} {r['params']:9d}"
        )
    rat = result["ratios"]
    if "fps_reverie_over_peer" in rat:
        verdict = "met" if rat["meets_target"] else "not met"
        lines.append(
            "reverie fps / peer: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in rat["fps_reverie_over_peer"].items())
            + f"  (target >= {TARGET}x the faster peer: {verdict})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-frames", type=int, default=60, help="timed latent frames")
    parser.add_argument(
        "--warmup", type=int, default=12, help="untimed latent frames first (fill the context)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per system (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--context-frames",
        type=int,
        default=13,
        help="wan_window's frames per forward, new frame included (Reverie's window: 12 + 1)",
    )
    parser.add_argument("--helios-chunk", type=int, default=1, help="latent frames per chunk")
    parser.add_argument(
        "--helios-history", default="8,2,1", help="Helios history_sizes long,mid,1x"
    )
    parser.add_argument(
        "--reverie-weights",
        choices=("random", "default"),
        default="random",
        help="random init of the default DiT's config, or the shipped weights (same cost)",
    )
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--case", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latent_frames < 1 or args.warmup < 0 or args.repeats < 1 or args.context_frames < 1:
        parser.error("need --latent-frames >= 1, --warmup >= 0, --repeats >= 1, --context >= 1")
    if args.helios_chunk < 1:
        parser.error("--helios-chunk must be >= 1")
    if args.case:
        try:
            print(json.dumps(run_case(args.case, args)))
        except Exception as e:  # reported in the JSON, the other systems still run
            print(json.dumps({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}))
        return
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    from importlib.metadata import version

    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for _ in range(args.repeats):  # interleaved: repeat r of every system before r + 1
        for system in systems:
            runs[system].append(spawn(system, args))
    summaries = {s: summarise(r, args) for s, r in runs.items()}
    result = {
        "benchmark": "peer_streaming",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "torch": version("torch"),
        "diffusers": version("diffusers"),
        "threads": args.threads,
        "setup": {
            "transformer": {
                "layers": LAYERS,
                "dim": DIM,
                "heads": HEADS,
                "ffn_dim": FFN_DIM,
                "patch": list(PATCH),
                "text_dim": TEXT_DIM,
                "freq_dim": FREQ_DIM,
            },
            "latent": [LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE],
            "resolution": RESOLUTION,
            "video_frames_per_latent_frame": VIDEO_PER_LATENT,
            "tokens_per_latent_frame": (LATENT_SIZE // PATCH[1]) * (LATENT_SIZE // PATCH[2]),
            "text_tokens": TEXT_TOKENS,
            "flow_times": [round(t, 4) for t in _times()],
            "warmup_latent_frames": args.warmup,
            "latent_frames": args.latent_frames,
            "repeats": args.repeats,
            "batch": 1,
            "dtype": "float32",
            "guidance": "none (guidance_scale 1)",
            "excluded_everywhere": "text encoding (precomputed random states), VAE decode",
            "weights": f"random (reverie: {args.reverie_weights})",
        },
        "systems": summaries,
        "ratios": ratios(summaries),
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    print(json.dumps(result, indent=2))
    print(format_table(result))
    if args.out:
        from reverie.io import atomic_write_json

        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
