"""Peak CPU memory of one DMD generator update, replayed (RELIC §4.4.2) vs naive back-propagation,
as the rollout grows (issue "Training": replayed peak at 32 latent frames <= 1.5x the peak at 4,
while the naive single graph grows).

Setup: the ``tiny`` preset (block-causal student, 1 latent frame per block, bidirectional teacher
and critic), 8x8 latents (64x64 video), batch 1, a 64-token text context, one exit step (the
last) for every block, fp32, one intra-op thread. Series: replayed and naive with the ``full``
memory policy (every frame's K/V kept: the cache, needed by inference too, grows linearly), and
replayed with the ``relic`` policy (RELIC §4.3: 6-frame window + spatially compressed memory).
The frame counts are generated latent frames after the clean first frame. One update =
zero_grad (grads kept allocated), the rollout, teacher (CFG) and critic scores, the backward
pass(es), an AdamW step.

Measurement: every case runs in a fresh subprocess started with ``MALLOC_MMAP_THRESHOLD_=65536``
(glibc serves every allocation above 64 KiB with its own mmap and returns it on free, so RSS
follows live tensor memory instead of a heap that never shrinks). In the subprocess: build the
models, run one warm-up update on a 1-frame rollout (allocates the gradients and the AdamW
state, so they are part of the baseline), ``malloc_trim(0)``, reset the kernel's peak-RSS
counter (``echo 5 > /proc/self/clear_refs``), read ``VmRSS`` (the baseline), run the measured
update, read ``VmHWM`` (the peak). ``update_mb = VmHWM - baseline`` is the memory the update
needs on top of the steady training state (weights, gradients, optimizer state, the Python and
torch runtime); ``process_peak_mb`` is the absolute peak. Where ``clear_refs`` cannot be
written, ``ru_maxrss`` is used and ``method`` says so (then the baseline's own peak may hide
small updates).

    python benchmarks/replay_memory.py --out benchmarks/results/replay_memory.json
    python benchmarks/replay_memory.py --quick          # 4 and 16 frames only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from peak_rss import peak_kb, reset_peak, status_kb

FRAMES = (4, 8, 16, 32)
QUICK_FRAMES = (4, 16)
# (back-propagation, memory policy) series.
SERIES = (("replay", "full"), ("naive", "full"), ("replay", "relic"))
TEXT_TOKENS = 64
LATENT_SIZE = (8, 8)
GUIDANCE = 3.0


def run_case(mode: str, policy: str, frames: int) -> dict:
    """One measured generator update in this (fresh) process."""
    import torch

    from reverie.diffusion import (
        FewStepSchedule,
        classifier_free_guidance,
        noisy_sample,
        x0_from_velocity,
    )
    from reverie.memory import get_policy
    from reverie.models import AttentionConfig, AttentionMode, WanDiT, get_preset
    from reverie.training.replay import (
        ARStudent,
        Conditioning,
        naive_dmd_loss,
        replayed_dmd_backward,
    )

    torch.set_num_threads(1)
    torch.manual_seed(0)
    causal = AttentionConfig(AttentionMode.BLOCK_CAUSAL, 1)
    student = WanDiT(get_preset("tiny", attention=causal))
    teacher = WanDiT(get_preset("tiny")).requires_grad_(False)
    critic = WanDiT(get_preset("tiny")).requires_grad_(False)
    for model in (student, teacher, critic):  # give the zero-initialised heads real weights
        with torch.no_grad():
            model.head.head.weight.normal_(0.0, 0.02)
    config = student.config
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-6, betas=(0.0, 0.999))
    runner = ARStudent(student, config, FewStepSchedule(), get_policy(policy))
    last_step = runner.schedule.num_steps - 1

    def conditioning(num_frames: int) -> Conditioning:
        video = 1 + config.vae_temporal_stride * (num_frames - 1)
        return Conditioning(
            prefix=torch.randn(1, 1, config.in_channels, *LATENT_SIZE),
            context=torch.randn(1, TEXT_TOKENS, config.text_dim),
            empty_context=torch.randn(1, TEXT_TOKENS, config.text_dim),
            actions=torch.rand(1, video, 13),
            poses=(torch.eye(3).expand(1, video, 3, 3), torch.randn(1, video, 3)),
        )

    def update(cond: Conditioning, num_frames: int) -> None:
        def score(latents):
            u = torch.full((1,), 0.5)
            x_u = noisy_sample(latents, torch.randn_like(latents), u)
            sequence = torch.cat([cond.prefix, x_u], dim=1)  # (1, N, C, h, w)
            t = torch.cat([torch.zeros(1, 1), u[:, None].expand(1, latents.shape[1])], dim=1)
            kw = cond.frames(0, num_frames, config.vae_temporal_stride)
            with torch.no_grad():
                real = classifier_free_guidance(
                    lambda x, s: teacher(x, s, cond.context, **kw),
                    lambda x, s: teacher(x, s, cond.empty_context, **kw),
                    GUIDANCE,
                )(sequence, t)
                fake = critic(sequence, t, cond.context, **kw)
            return tuple(x0_from_velocity(sequence, v, t)[:, 1:] for v in (real, fake))

        optimizer.zero_grad(set_to_none=False)
        exits = [last_step] * (num_frames - 1)
        if mode == "replay":
            replayed_dmd_backward(runner, cond, num_frames, exits, score)
        else:
            naive_dmd_loss(runner, cond, num_frames, exits, score).loss.backward()
        optimizer.step()

    update(conditioning(2), 2)  # warm-up: gradients and AdamW state join the baseline
    cond = conditioning(frames + 1)
    method = reset_peak()
    baseline = status_kb("VmRSS")
    start = time.perf_counter()
    update(cond, frames + 1)
    seconds = time.perf_counter() - start
    peak = peak_kb(method)
    return {
        "mode": mode,
        "policy": policy,
        "frames": frames,
        "update_mb": round((peak - baseline) / 1024, 1),
        "baseline_mb": round(baseline / 1024, 1),
        "process_peak_mb": round(peak / 1024, 1),
        "seconds": round(seconds, 2),
        "method": method,
    }


def spawn(mode: str, policy: str, frames: int) -> dict:
    """Run `run_case` in a fresh interpreter with a fixed glibc mmap threshold."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--case", mode, policy, str(frames)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help=f"frames {QUICK_FRAMES} only")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # MODE POLICY FRAMES
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], int(args.case[2]))))
        return
    frames = QUICK_FRAMES if args.quick else FRAMES
    cases = [spawn(mode, policy, n) for mode, policy in SERIES for n in frames]
    by = {(c["mode"], c["policy"], c["frames"]): c for c in cases}
    first, last = frames[0], frames[-1]
    ratios = {
        f"{mode}/{policy}": {
            key: round(by[mode, policy, last][key] / by[mode, policy, first][key], 2)
            for key in ("update_mb", "process_peak_mb")
        }
        for mode, policy in SERIES
    }
    result = {
        "benchmark": "replay_memory",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1",
        "setup": {"preset": "tiny", "latent_size": LATENT_SIZE, "batch": 1, "exit": "last"},
        "cases": cases,
        f"ratio_{last}_over_{first}": ratios,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
