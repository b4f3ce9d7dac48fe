"""`Session`: one live stream of a `WorldModel` (create with `WorldModel.start`).

    session = model.start(image, "a room", memory="relic")
    frames = session.step({"dolly_in", "pan_left"})  # (4, 64, 64, 3) uint8 per step
    frames = session.observe(real_frames, actions)    # write real frames into memory
    block = session.propose({"pan_left"})             # denoise the next block, write nothing
    frames = session.commit(block)                    # write and decode it (= step)

One `Session.step` is one block of the block-causal student (RELIC §4.2, Self Forcing
arXiv 2506.08009 Algorithm 2, `reverie.diffusion.rollout_block`): `len(timesteps)` denoising
passes that read the KV cache, one cache-write pass on the clean block through the memory
policy (`write_denoised`, the same write as `observe`: MAG's memory model and empty text where
the policy says so, then `after_write`), and a
streaming VAE decode of the block's latent frames into `4 * frames_per_block` video frames.
The session owns the cache, the policy, the RNG and all positions; poses are integrated from
the actions (RELIC §4.1.2) with translation scaled by `gamma * metres_per_unit`.

`step` is `commit(propose(actions))`: the denoising passes only read the cache, so a proposed
block can be dropped and proposed again with newer actions until it is committed. The play
server uses this to denoise the next block early and redo it when a key changes
(`reverie.play.stream`), which takes the wait for the next block boundary off the key-to-frame
latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reverie.camera.actions import (
    ACTION_NAMES,
    NUM_ACTIONS,
    STATIC_INDEX,
    actions_to_poses,
    names_to_action,
)
from reverie.diffusion.rollout import BlockInputs, denoise_block, write_denoised
from reverie.engine.images import video_to_uint8
from reverie.memory import MemoryPolicy
from reverie.models import KVCache

if TYPE_CHECKING:
    from reverie.engine.world_model import WorldModel


@dataclass(frozen=True, eq=False)
class Proposal:
    """A denoised block not yet written to the cache (`Session.propose`).

    Attributes:
        latents: clean latents `(1, frames_per_block, C, h, w)` in the DiT's dtype.
        actions: `(frames_per_step, 13)` float32 actions it was denoised with.
        R, P: `(frames_per_step, 3, 3)` and `(frames_per_step, 3)` float64 camera poses of its
            frames (world-to-camera rotation, position in metres, relative to frame 0).
        inputs: its text, action and pose conditioning (reused by the cache write).
        start: the latent frame it starts at (valid while the session is still there).
        denoise_s: seconds its denoising took.
    """

    latents: torch.Tensor
    actions: np.ndarray
    R: np.ndarray
    P: np.ndarray
    inputs: BlockInputs
    start: int
    denoise_s: float


class Session:
    """One live stream: KV cache + memory policy + streaming VAE decoder + camera state.

    Create with `WorldModel.start`. Not thread-safe: drive one session from one thread.

    Attributes:
        model: the `WorldModel`.
        policy: the memory policy instance (one per session).
        cache: the generator's `KVCache`.
        prompt: the text description.
        gamma: velocity multiplier (RELIC §5.2).
        first_frame: `(res, res, 3)` uint8, the start image as the VAE reconstructs it.
        image_note: what was done to the start image to fit the model, or None.
    """

    def __init__(
        self,
        model: WorldModel,
        frame: np.ndarray,
        prompt: str,
        policy: MemoryPolicy,
        *,
        gamma: float,
        seed: int,
        image_note: str | None = None,
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.model, self.policy, self.prompt = model, policy, prompt
        self.gamma, self.image_note = float(gamma), image_note
        self.context = model.encode_prompt(prompt)
        self.empty_context = model.encode_prompt("") if policy.write_spec.empty_text else None
        self.cache: KVCache = model.dit.new_cache(storage_dtype=kv_dtype)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        dit = model.dit
        self._block = torch.empty(  # (1, fpb, C, h, w): a generated block's shape, dtype, device
            (self.context.shape[0], dit.config.attention.frames_per_block)
            + (dit.config.in_channels, *model.latent_size),
            dtype=next(dit.parameters()).dtype,
            device=next(dit.parameters()).device,
        )
        self._decoder = model.vae.start_decoding()
        self._encoder = model.vae.start_encoding()
        self._actions: list[np.ndarray] = []  # (13,) per video frame
        self._R: list[np.ndarray] = []  # (3, 3) per video frame, relative to frame 0
        self._P: list[np.ndarray] = []  # (3,) metres per video frame
        self.latent_frames = 0
        self.timings = {"denoise_s": 0.0, "decode_s": 0.0, "encode_s": 0.0}
        self.generated_frames = 0
        self.last_step_latency_s: float | None = None
        self.closed = False
        policy.reset()
        self.first_frame = self._observe_first(frame)

    # ------------------------------------------------------------------ camera state
    @property
    def frames(self) -> int:
        """Video frames so far (start frame included)."""
        return len(self._actions)

    @property
    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Commanded poses of every frame so far, relative to the first frame:
        `R (T, 3, 3)` world-to-camera, `P (T, 3)` camera centres in metres (float64)."""
        return np.stack(self._R), np.stack(self._P)

    @property
    def actions(self) -> np.ndarray:
        """Actions of every frame so far `(T, 13)` float32 (frame 0: static)."""
        return np.stack(self._actions)

    @property
    def metres_per_unit(self) -> float:
        """Metres per frame of a unit translation action at this session's gamma."""
        return self.gamma * self.model.config.metres_per_unit

    def parse_actions(self, actions: Any) -> np.ndarray:
        """Actions of one step as `(frames_per_step, 13)` float32.

        Accepts a `(13,)` vector (held for the whole step), `(frames_per_step, 13)`, or an
        iterable of action names (`reverie.camera.ACTION_NAMES`; empty = static).

        Raises:
            ValueError: unknown or opposing names, wrong shape, NaN/inf or negative entries.
        """
        count = self.model.frames_per_step
        if isinstance(actions, str):
            actions = [actions]
        if isinstance(actions, (set, frozenset, list, tuple)) and all(
            isinstance(a, str) for a in actions
        ):
            actions = names_to_action(actions)
        a = np.asarray(actions, dtype=np.float32)
        if a.shape == (NUM_ACTIONS,):
            a = np.tile(a, (count, 1))
        if a.shape != (count, NUM_ACTIONS):
            raise ValueError(
                f"actions must be ({NUM_ACTIONS},), ({count}, {NUM_ACTIONS}) or action names "
                f"({', '.join(ACTION_NAMES)}), got shape {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        if (a < 0).any():
            raise ValueError("action magnitudes must be >= 0 (use the opposite action name)")
        return a

    def _integrate(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poses of the frames moved by `actions (F, 13)`, continuing from the last frame."""
        dummy = np.zeros((1, NUM_ACTIONS), dtype=np.float32)
        R, P = actions_to_poses(
            np.concatenate([dummy, actions]), self.metres_per_unit, self._R[-1], self._P[-1]
        )
        return R[1:], P[1:]

    def _inputs(self, actions: np.ndarray, R: np.ndarray, P: np.ndarray) -> BlockInputs:
        """Text, action and pose conditioning of the frames moved by `actions`."""
        device, dtype = self.model.device, next(self.model.dit.parameters()).dtype
        a = torch.from_numpy(actions).to(device, dtype)[None]  # (1, F, 13)
        pose = (
            torch.from_numpy(R).to(device, dtype)[None],  # (1, F, 3, 3)
            torch.from_numpy(P).to(device, dtype)[None],  # (1, F, 3)
        )
        return BlockInputs(self.context, self.empty_context, a, pose)

    def _record(self, actions: np.ndarray, R: np.ndarray, P: np.ndarray) -> None:
        self._actions.extend(actions)
        self._R.extend(R)
        self._P.extend(P)

    # ------------------------------------------------------------------ streaming
    def _to_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 `(T, H, W, 3)` -> `(1, T, 3, H, W)` in [-1, 1] on the model's device."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.model.device)
        video = video.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[None]
        return video.to(self.model.vae.dtype)

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        tic = time.perf_counter()
        with self.model.vae_autocast():
            video = self._decoder.step(latents)
        frames = video_to_uint8(video[0])
        self.timings["decode_s"] += time.perf_counter() - tic
        return frames

    @torch.inference_mode()
    def _observe_first(self, frame: np.ndarray) -> np.ndarray:
        tic = time.perf_counter()
        with self.model.vae_autocast():
            latents = self._encoder.step(self._to_video(frame[None]))  # (1, 1, C, h, w)
        latents = latents.float()
        self.timings["encode_s"] += time.perf_counter() - tic
        static = np.zeros((1, NUM_ACTIONS), dtype=np.float32)
        static[0, STATIC_INDEX] = 1.0
        R, P = np.eye(3)[None], np.zeros((1, 3))
        self._record(static, R, P)
        self._write(latents, self._inputs(static, R, P))
        return self._decode(latents)[0]

    def _write(self, latents: torch.Tensor, inputs: BlockInputs) -> None:
        tic = time.perf_counter()
        write_denoised(
            self.model.dit,
            self.cache,
            self.policy,
            latents.to(self._block.dtype),
            inputs,
            self.latent_frames,
            context_noise=self.model.config.context_noise,
            generator=self.generator,
        )
        self.timings["denoise_s"] += time.perf_counter() - tic
        self.latent_frames += latents.shape[1]

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this session is closed; start a new one")

    @torch.inference_mode()
    def step(self, actions: Any) -> np.ndarray:
        """Generate the next block: `frames_per_step` video frames moved by `actions`.

        Args:
            actions: see `parse_actions` (a held `(13,)` vector, one row per frame, or names).

        Returns:
            `(frames_per_step, res, res, 3)` uint8 RGB frames.

        Raises:
            ValueError: bad actions (the session is unchanged). RuntimeError: closed session.
        """
        start = time.perf_counter()
        frames = self._finish(self._generate(actions))
        self.last_step_latency_s = time.perf_counter() - start
        return frames

    @torch.inference_mode()
    def propose(self, actions: Any) -> Proposal:
        """Denoise the next block without writing it: the session does not change (only its
        RNG advances), so the proposal can be dropped and the block proposed again.

        Args:
            actions: as `step`.

        Returns:
            a `Proposal` for `commit`.

        Raises:
            ValueError: bad actions. RuntimeError: closed session.
        """
        self._check_open()
        a = self.parse_actions(actions)
        R, P = self._integrate(a)
        inputs = self._inputs(a, R, P)
        start = time.perf_counter()
        fpb = self._block.shape[1]
        latents = denoise_block(
            self.model.dit,
            self.cache,
            inputs,
            self.model.schedule.times,
            self._block,
            (self.latent_frames, self.latent_frames + fpb),
            generator=self.generator,
        ).latents
        seconds = time.perf_counter() - start
        self.timings["denoise_s"] += seconds
        return Proposal(latents, a, R, P, inputs, self.latent_frames, seconds)

    @torch.inference_mode()
    def commit(self, proposal: Proposal) -> np.ndarray:
        """Write a proposed block to the cache through the memory policy and decode it.

        `commit(propose(a))` equals `step(a)` exactly (same RNG draws, same write).

        Returns:
            `(frames_per_step, res, res, 3)` uint8 RGB frames.

        Raises:
            ValueError: the proposal is stale (the session moved on since it was proposed).
            RuntimeError: closed session.
        """
        self._check_open()
        if proposal.start != self.latent_frames:
            raise ValueError(
                f"stale proposal: it starts at latent frame {proposal.start}, the session is at "
                f"{self.latent_frames}; propose again"
            )
        start = time.perf_counter()
        frames = self._finish(self._apply(proposal))
        self.last_step_latency_s = proposal.denoise_s + time.perf_counter() - start
        return frames

    def stream(self, steps: Iterable[Any]) -> Iterator[np.ndarray]:
        """`step` for each item of `steps`, pipelined over two threads: block k is decoded
        on a worker thread while block k + 1 is denoised, so on 2 cores a step costs about
        max(denoise, decode) instead of their sum. Yields the same frames as `step` would.

        Raises:
            as `step`; an error in one item stops the stream after the frames before it.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="reverie-decode") as pool:
            pending: Future | None = None
            for actions in steps:
                with torch.inference_mode():
                    block = self._generate(actions)
                if pending is not None:
                    yield pending.result()
                pending = pool.submit(self._finish_in_worker, block)
            if pending is not None:
                yield pending.result()

    def _generate(self, actions: Any) -> torch.Tensor:
        """Denoise and write one block (main thread); returns its clean latents."""
        return self._apply(self.propose(actions))

    def _apply(self, p: Proposal) -> torch.Tensor:
        """Write a proposal's block through the policy and record its camera; its latents."""
        self._write(p.latents, p.inputs)
        self._record(p.actions, p.R, p.P)
        return p.latents

    def _finish(self, block: torch.Tensor) -> np.ndarray:
        """Decode a generated block into frames and count them."""
        frames = self._decode(block)
        self.generated_frames += len(frames)
        return frames

    def _finish_in_worker(self, block: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self._finish(block)

    @torch.inference_mode()
    def observe(self, frames: np.ndarray, actions: Any) -> np.ndarray:
        """Write real frames into memory as context, without generating ("memorize").

        The frames continue the stream after the current frame; they are VAE-encoded (the
        encoder's causal state runs across calls), written block by block through the memory
        policy, and decoded so the decoder's causal state stays in step.

        Args:
            frames: `(k * frames_per_step, res, res, 3)` uint8 RGB.
            actions: `(k * frames_per_step, 13)` float32, the motion into each frame.

        Returns:
            the VAE reconstructions `(k * frames_per_step, res, res, 3)` uint8.

        Raises:
            ValueError: shapes that do not match or are not whole steps, NaN actions.
        """
        self._check_open()
        frames = np.asarray(frames)
        step = self.model.frames_per_step
        res = self.resolution
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (res, res, 3):
            raise ValueError(f"frames must be (T, {res}, {res}, 3) uint8, got {frames.shape}")
        if len(frames) == 0 or len(frames) % step:
            raise ValueError(
                f"observe takes a positive multiple of {step} frames, got {len(frames)}"
            )
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (len(frames), NUM_ACTIONS):
            raise ValueError(f"actions must be ({len(frames)}, 13), got {actions.shape}")
        rows = [self.parse_actions(actions[i : i + step]) for i in range(0, len(frames), step)]
        tic = time.perf_counter()
        with self.model.vae_autocast():
            latents = self._encoder.step(self._to_video(frames))  # (1, k fpb, C, h, w)
        latents = latents.float()
        self.timings["encode_s"] += time.perf_counter() - tic
        out = []
        fpb = self.model.frames_per_block
        for b, a in enumerate(rows):
            R, P = self._integrate(a)
            self._write(latents[:, b * fpb : (b + 1) * fpb], self._inputs(a, R, P))
            self._record(a, R, P)
            out.append(self._decode(latents[:, b * fpb : (b + 1) * fpb]))
        return np.concatenate(out)

    @property
    def resolution(self) -> int:
        return self.model.resolution

    def stats(self) -> dict[str, Any]:
        """Counters of this session: frames, latent frames, cache tokens/bytes (everything the
        policy holds), memory policy, last step latency and the time spent per stage."""
        return {
            "frames": self.frames,
            "generated_frames": self.generated_frames,
            "latent_frames": self.latent_frames,
            "cache_frames": self.cache.num_frames,
            "cache_tokens": int(self.policy.num_tokens(self.cache)),
            "cache_bytes": int(self.policy.nbytes(self.cache)),
            "memory_policy": self.policy.name,
            "step_latency_s": self.last_step_latency_s,
            **{k: round(v, 6) for k, v in self.timings.items()},
        }

    def close(self) -> None:
        """Free the cache and the policy's side state; further steps raise RuntimeError."""
        self.cache.reset()
        self.policy.reset()
        self.closed = True

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
