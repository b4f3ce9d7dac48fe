"""Built-in training stages; importing this package registers them (see `Stage`).

| name | trains | status |
|---|---|---|
| `toy` | a small MLP on synthetic data (infrastructure smoke stage) | done |
| `dmd` | Self-Forcing DMD of the student with replayed back-propagation (RELIC §4.4.2) | done |
| `mag` | MAG's memory model: a KV-cache autoencoder, one frame kept per block (MAG §3.4) | done |
| `retrieval` | LongLive-RAG's frame embedder: autoencoder + Window Temporal Delta loss | done |
| `vae` | the tiny video VAE: L1 + KL, PSNR logged (then `reverie encode` caches latents) | done |
| `teacher` | bidirectional flow matching: latents, actions, poses, text (RELIC §4.1) | done |
| `ode` | teacher ODE trajectories at the student's 4 times (generation, no training) | done |
| `student` | block-causal student: ODE regression with hybrid forcing (RELIC §4.4.1) | done |
"""

from reverie.training.stages import dmd, mag, ode, retrieval, student, teacher, toy, vae

__all__ = ["dmd", "mag", "ode", "retrieval", "student", "teacher", "toy", "vae"]
