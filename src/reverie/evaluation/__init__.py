"""Benchmarks of a world model (`reverie eval`; protocols in docs/evaluation.md).

| module | what |
|---|---|
| `metrics` | per-frame PSNR / SSIM of uint8 videos |
| `heldout` | held-out scene seeds (disjoint from training), ground-truth renders |
| `revisit_episode`, `revisit` | MAG-Bench-style revisit consistency (MAG arXiv 2512.18741 §3.6) |
| `probe`, `probe_train` | the pose probe that recovers camera trajectories from frames |
| `trajectory_error`, `actions` | action accuracy, Sim(3)-aligned RPE (RELIC 2512.04040 §5.3) |
| `speed` | streaming FPS, latency and cache size per memory policy |
| `cli` | `reverie eval revisit / actions / speed / train-probe` |
"""
