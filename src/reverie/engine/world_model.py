"""`WorldModel`: a packaged interactive world model, and `Session`: one live stream of it.

    model = WorldModel.from_pretrained()              # the shipped default (tiny, 64x64)
    session = model.start(image, "a room", memory="relic")
    frames = session.step({"dolly_in", "pan_left"})  # (4, 64, 64, 3) uint8 per step

One `Session.step` is one block of the block-causal student (RELIC §4.2, Self Forcing
arXiv 2506.08009 Algorithm 2): `len(timesteps)` denoising passes that read the KV cache, one
cache-write pass on the clean block through the memory policy (`reverie.memory.write_block`:
MAG's memory model and empty text where the policy says so, then `after_write`), and a
streaming VAE decode of the block's latent frames into `4 * frames_per_block` video frames.
The session owns the cache, the policy, the RNG and all positions; poses are integrated from
the actions (RELIC §4.1.2) with translation scaled by `gamma * metres_per_unit`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from reverie.camera.actions import (
    ACTION_NAMES,
    NUM_ACTIONS,
    STATIC_INDEX,
    actions_to_poses,
    names_to_action,
)
from reverie.config_utils import from_dict, to_dict
from reverie.diffusion.schedule import FewStepSchedule
from reverie.diffusion.streaming import stream_blocks
from reverie.engine.config import CONFIG_NAME, WorldModelConfig
from reverie.engine.images import load_image, video_to_uint8
from reverie.io import atomic_write_json, check_safetensors, make_temp_dir, save_safetensors
from reverie.memory import (
    MemoryPolicy,
    RetrievalEmbedder,
    RetrievalEmbedderConfig,
    get_policy,
    policy_names,
    write_block,
)
from reverie.models import KVCache, WanDiT
from reverie.models.checkpoints import load_checkpoint, save_checkpoint
from reverie.text import TextEncoder, get_text_encoder
from reverie.tokenizer import PatchTokenizer, VideoVAE, load_vae, save_vae

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
DIT_DIR, VAE_DIR, MEMORY_DIR, RETRIEVAL_DIR = "dit", "vae", "memory_model", "retrieval"
RETRIEVAL_WEIGHTS, RETRIEVAL_CONFIG = "embedder.safetensors", "embedder_config.json"
GAMMA_RANGE = (0.05, 4.0)  # velocity multipliers offered to users (RELIC §5.2); play's slider
PROMPT_CACHE_SIZE = 32  # text states kept per model (least recently used dropped)
MAX_PROMPT_CHARS = 4000  # scene captions reach ~1100 characters; MiniLM truncates anyway


def check_prompt(prompt: object, what: str = "prompt") -> str:
    """`prompt` if it is text the tokenizer can take: a `str` of valid Unicode (no lone
    surrogates, e.g. from invalid UTF-8 on the command line) of at most `MAX_PROMPT_CHARS`.

    Raises:
        ValueError: naming `what` and the problem.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"{what} must be a string, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} is not valid UTF-8 text (character {e.start}: {prompt[e.start]!r})"
        ) from None
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"{what} is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    return prompt


def gamma_for_scale(action_scale: float, metres_per_unit: float) -> float:
    """`action_scale / metres_per_unit` (see `WorldModel.gamma_for`); 1 for a static path."""
    if not action_scale > 0:
        return 1.0
    return float(action_scale) / float(metres_per_unit)


def resolve_model_dir(path: str | Path | None) -> Path:
    """`None` or `"default"` -> the shipped default model's directory; else `path`.

    Raises:
        FileNotFoundError: the directory has no `world_model.json` (for the default: the
            package was installed without it; train one with `scripts/train_default.sh`).
    """
    directory = DEFAULT_MODEL_DIR if path in (None, "default") else Path(path)
    if not (directory / CONFIG_NAME).is_file():
        what = "the default model" if path in (None, "default") else "a world model"
        raise FileNotFoundError(
            f"{directory} is not {what} (no {CONFIG_NAME}); pass --checkpoint DIR written by "
            "WorldModel.save_pretrained / scripts/train_default.sh"
        )
    return directory


class WorldModel:
    """The generator (block-causal few-step `WanDiT`), tokenizer, text encoder and the optional
    memory components (MAG memory model, LongLive-RAG embedder) of one world model.

    Attributes:
        config: `WorldModelConfig`.
        dit: the student, block-causal, eval mode, no grad.
        vae: the tokenizer, `VideoVAE` or `PatchTokenizer` (latent normalisation folded into
            its config).
        memory_model: MAG's memory model (same backbone shape as `dit`) or None.
        retrieval_embedder: LongLive-RAG's trained `RetrievalEmbedder` or None (pooled latents).
        source: where it was loaded from (a directory, or "random").
    """

    def __init__(
        self,
        config: WorldModelConfig,
        dit: WanDiT,
        vae: VideoVAE | PatchTokenizer,
        *,
        memory_model: WanDiT | None = None,
        retrieval_embedder: RetrievalEmbedder | None = None,
        text_encoder: TextEncoder | None = None,
        source: str = "memory",
    ) -> None:
        if dit.config.in_channels != vae.latent_channels:
            raise ValueError(
                f"DiT takes {dit.config.in_channels} latent channels, VAE gives "
                f"{vae.latent_channels}"
            )
        if config.resolution % vae.spatial_factor:
            raise ValueError(
                f"resolution {config.resolution} is not a multiple of the tokenizer's "
                f"{vae.spatial_factor}"
            )
        patch = dit.config.patch_size[1]
        if (config.resolution // vae.spatial_factor) % patch:
            raise ValueError(
                f"resolution {config.resolution} gives {config.resolution // vae.spatial_factor}"
                f"-pixel latents, not a multiple of the DiT's patch size {patch}; it must be a "
                f"multiple of {vae.spatial_factor * patch}"
            )
        self.config = config
        self.dit = dit.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.memory_model = (
            None if memory_model is None else memory_model.eval().requires_grad_(False)
        )
        self.retrieval_embedder = (
            None if retrieval_embedder is None else retrieval_embedder.eval().requires_grad_(False)
        )
        self._text_encoder = text_encoder
        self.vae_bf16 = True  # bf16 autocast of the VAE on CPU (see `vae_autocast`)
        self._prompt_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # LRU
        self._text_lock = threading.Lock()  # sessions may start from several threads
        self.source = source

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @property
    def resolution(self) -> int:
        """Square frame side in pixels."""
        return self.config.resolution

    @property
    def fps(self) -> int:
        """Video frames per second the model was trained at."""
        return self.config.fps

    @property
    def frames_per_block(self) -> int:
        """Latent frames generated per block (per `Session.step`)."""
        return self.dit.config.attention.frames_per_block

    @property
    def frames_per_step(self) -> int:
        """Video frames returned by one `Session.step`: 4 per latent frame (Wan VAE)."""
        return self.vae.temporal_factor * self.frames_per_block

    @property
    def latent_size(self) -> tuple[int, int]:
        """`(h, w)` of one latent frame."""
        side = self.resolution // self.vae.spatial_factor
        return side, side

    def vae_autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the VAE on CPU when `vae_bf16` (3-5x faster 3D convolutions:
        fp32 `Conv3d` takes PyTorch's slow im2col path on CPU), else a no-op."""
        if self.vae_bf16 and self.device.type == "cpu":
            return torch.autocast("cpu", torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def schedule(self) -> FewStepSchedule:
        return FewStepSchedule(tuple(self.config.timesteps), self.config.shift)

    @property
    def memory_policies(self) -> tuple[str, ...]:
        """Policy names this model can run (all registered; `mag` writes with the memory
        model when there is one, else with the generator)."""
        return tuple(policy_names())

    @property
    def text_encoder(self) -> TextEncoder:
        """The frozen text encoder (built on first use)."""
        if self._text_encoder is None:
            # `encode_prompt`'s LRU is the one prompt cache: the encoder's own would keep up
            # to 1024 more prompts (100 MB for MiniLM), unless `text_options` asks for it.
            options = {"cache_size": 0, **self.config.text_options}
            self._text_encoder = get_text_encoder(self.config.text_encoder, **options)
            if self._text_encoder.dim != self.dit.config.text_dim:
                raise ValueError(
                    f"text encoder {self.config.text_encoder!r} gives {self._text_encoder.dim}-d "
                    f"states, the DiT takes {self.dit.config.text_dim}"
                )
        return self._text_encoder

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Text states `(1, L, text_dim)` of `prompt` ("" = the empty prompt).

        The newest `PROMPT_CACHE_SIZE` prompts are cached (least recently used dropped), so a
        server taking prompts from users holds bounded memory.

        Raises:
            ValueError: not a string, not valid UTF-8 text, or too long (`check_prompt`).
        """
        check_prompt(prompt)
        with self._text_lock:
            return self._encode_prompt_locked(prompt)

    def _encode_prompt_locked(self, prompt: str) -> torch.Tensor:
        if prompt in self._prompt_cache:
            self._prompt_cache.move_to_end(prompt)
            return self._prompt_cache[prompt]
        if prompt:
            states = self.text_encoder.encode([prompt])[0]
        else:
            states = self.text_encoder.encode_empty(1)[0]
        dtype = next(self.dit.parameters()).dtype
        self._prompt_cache[prompt] = states = states.to(self.device, dtype)
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return states

    def gamma_for(self, action_scale: float) -> float:
        """The session gamma that replays a camera path whose actions were normalised by
        `action_scale` (RELIC Algorithm 1's d-bar, metres per frame): a unit translation then
        moves `gamma * metres_per_unit = action_scale` metres per frame (RELIC §5.2).
        A static path (`action_scale == 0`) gets gamma 1."""
        return gamma_for_scale(action_scale, self.config.metres_per_unit)

    def make_policy(self, name: str, **options: Any) -> MemoryPolicy:
        """A fresh memory policy by name, with this model's components and defaults.

        `mag` gets the memory model as its writer and `retrieval` the trained embedder (when
        packaged); `config.memory[name]` then `options` override the policy's config fields.

        Raises:
            ValueError: unknown policy name (lists the known ones) or a bad option.
        """
        if name not in policy_names():
            raise ValueError(f"unknown memory policy {name!r}; known: {', '.join(policy_names())}")
        kwargs = {**self.config.memory.get(name, {}), **options}
        if name == "mag":
            kwargs.setdefault("writer", self.memory_model)
        if name == "retrieval" and self.retrieval_embedder is not None:
            kwargs.setdefault("embed", self.retrieval_embedder)
        try:
            return get_policy(name, **kwargs)
        except TypeError as e:
            raise ValueError(f"bad options for memory policy {name!r}: {e}") from e

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, device: str | torch.device = "cpu"
    ) -> WorldModel:
        """Load a `save_pretrained` directory (`None` / `"default"`: the shipped model).

        Weights stored in bf16 are loaded into float32 modules.

        Raises:
            FileNotFoundError: a missing directory or file (named).
            ValueError: naming the file: a corrupt `world_model.json` or config, a truncated
                weights file, weights that do not fit their config, a resolution the weights
                cannot run at, or an unavailable `device`.
        """
        directory = resolve_model_dir(path)
        check_device(device)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{directory / CONFIG_NAME} is not valid JSON: {e}") from e
        try:
            config = WorldModelConfig.from_dict(meta)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{directory / CONFIG_NAME}: {e}") from e
        for sub in (DIT_DIR, VAE_DIR):
            if not (directory / sub).is_dir():
                raise FileNotFoundError(f"{directory / sub} is missing")
        for weights in sorted(directory.glob("*/*.safetensors")):
            check_safetensors(weights)  # names a truncated file before any load
        kw = {"device": device, "dtype": torch.float32}
        dit = _load_part(directory / DIT_DIR, load_checkpoint, **kw)
        vae = _load_part(directory / VAE_DIR, load_vae, **kw)
        memory_model = None
        if (directory / MEMORY_DIR).is_dir():
            memory_model = _load_part(directory / MEMORY_DIR, load_checkpoint, **kw)
        embedder = None
        if (directory / RETRIEVAL_DIR).is_dir():
            embedder = _load_part(directory / RETRIEVAL_DIR, load_retrieval_dir, device=device)
        try:
            return cls(
                config,
                dit,
                vae,
                memory_model=memory_model,
                retrieval_embedder=embedder,
                source=str(directory),
            )
        except ValueError as e:
            raise ValueError(f"{directory / CONFIG_NAME} does not match its weights: {e}") from e

    @classmethod
    def random(
        cls,
        seed: int = 0,
        *,
        resolution: int = 64,
        frames_per_block: int = 1,
        text_encoder: str = "minilm",
    ) -> WorldModel:
        """An untrained `tiny` model (tests, benchmarks, trying the tools without weights).

        Zero-initialised layers (the output head, the action/pose projections) get small random
        weights, so the output depends on the input, text and actions as in a trained model.
        """
        from reverie.models import AttentionConfig, AttentionMode, get_preset

        generator = torch.Generator().manual_seed(seed)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            mode = AttentionMode.BLOCK_CAUSAL
            attention = AttentionConfig(mode, frames_per_block=frames_per_block)
            dit = WanDiT(get_preset("tiny", attention=attention))
            vae = VideoVAE.from_preset("tiny")
        finally:
            torch.random.set_rng_state(torch_state)
        with torch.no_grad():
            for p in dit.parameters():
                if p.ndim >= 2 and not p.any():
                    p.copy_(0.05 * torch.randn(p.shape, generator=generator))
        return cls(
            WorldModelConfig(resolution=resolution, text_encoder=text_encoder),
            dit,
            vae,
            source="random",
        )

    def save_pretrained(
        self, directory: str | Path, *, dtype: torch.dtype = torch.bfloat16
    ) -> Path:
        """Write the model to `directory` (replaced atomically: written next to it, renamed).

        Weights are stored in `dtype` (bf16 halves the size; loading casts back to float32).
        Returns the directory.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(f".{directory.name}.", directory.parent)
        try:
            save_checkpoint(_cast_copy(self.dit, dtype), tmp / DIT_DIR)
            save_vae(_cast_copy(self.vae, self.vae.storage_dtype or dtype), tmp / VAE_DIR)
            if self.memory_model is not None:
                save_checkpoint(_cast_copy(self.memory_model, dtype), tmp / MEMORY_DIR)
            if self.retrieval_embedder is not None:
                (tmp / RETRIEVAL_DIR).mkdir()
                embedder = _cast_copy(self.retrieval_embedder, dtype)
                save_safetensors(tmp / RETRIEVAL_DIR / RETRIEVAL_WEIGHTS, embedder.state_dict())
                atomic_write_json(
                    tmp / RETRIEVAL_DIR / RETRIEVAL_CONFIG, to_dict(self.retrieval_embedder.config)
                )
            atomic_write_json(tmp / CONFIG_NAME, self.config.to_dict())
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                directory.rename(old)
                tmp.rename(directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    # ------------------------------------------------------------------ sessions
    def start(
        self,
        image: Any,
        prompt: str = "",
        *,
        memory: str = "relic",
        gamma: float = 1.0,
        seed: int = 0,
        memory_options: dict[str, Any] | None = None,
    ) -> Session:
        """Start a stream from one image and a prompt.

        Args:
            image: path, PIL image or `(H, W, 3)` uint8 array; centre-cropped and resized to
                `resolution` (`Session.image_note` says what was done).
            prompt: text description ("" = the empty prompt).
            memory: memory policy name (`memory_policies`).
            gamma: velocity multiplier (RELIC §5.2), > 0: 1 moves at the training data's
                typical speed.
            seed: seed of all noise of this session.
            memory_options: overrides of the policy's config fields.

        Raises:
            ValueError / FileNotFoundError: bad image, prompt, policy or gamma.
        """
        frame, note = load_image(image, self.resolution)
        policy = self.make_policy(memory, **(memory_options or {}))
        return Session(self, frame, prompt, policy, gamma=gamma, seed=seed, image_note=note)


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device` if this machine has it.

    Raises:
        ValueError: an unknown device string, or CUDA / MPS asked for but not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device {device!r} is not a device (use cpu or cuda): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: use cpu or cuda")
    return dev


def _load_part(directory: Path, load, **kwargs):
    """`load(directory, **kwargs)`, its failures re-raised naming `directory`."""
    try:
        return load(directory, **kwargs)
    except FileNotFoundError:
        raise
    except (ValueError, RuntimeError, KeyError, TypeError, OSError, SafetensorError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"cannot load {directory} ({type(e).__name__}: {detail}); the weights do not fit "
            "their config or are damaged"
        ) from e


def load_retrieval_dir(directory: Path, device: str | torch.device) -> RetrievalEmbedder:
    """The embedder saved by `save_pretrained` (float32, eval, no grad)."""
    for name in (RETRIEVAL_WEIGHTS, RETRIEVAL_CONFIG):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing")
    config = from_dict(
        RetrievalEmbedderConfig, json.loads((directory / RETRIEVAL_CONFIG).read_text())
    )
    embedder = RetrievalEmbedder(config)
    embedder.load_state_dict(load_file(str(directory / RETRIEVAL_WEIGHTS)))
    return embedder.float().to(device)


def _cast_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `module` in `dtype` (the original keeps its dtype)."""
    return copy.deepcopy(module).to(dtype)


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
    ) -> None:
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.model, self.policy, self.prompt = model, policy, prompt
        self.gamma, self.image_note = float(gamma), image_note
        self.context = model.encode_prompt(prompt)
        self.empty_context = model.encode_prompt("") if policy.write_spec.empty_text else None
        self.cache: KVCache = model.dit.new_cache()
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
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

    def _conditioning(self, actions: np.ndarray, R: np.ndarray, P: np.ndarray):
        device, dtype = self.model.device, next(self.model.dit.parameters()).dtype
        a = torch.from_numpy(actions).to(device, dtype)[None]  # (1, F, 13)
        pose = (
            torch.from_numpy(R).to(device, dtype)[None],  # (1, F, 3, 3)
            torch.from_numpy(P).to(device, dtype)[None],  # (1, F, 3)
        )
        return a, pose

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
        self._write(latents, static, R, P)
        return self._decode(latents)[0]

    def _write(self, latents: torch.Tensor, actions, R, P) -> None:
        a, pose = self._conditioning(actions, R, P)
        tic = time.perf_counter()
        write_block(
            self.policy,
            self.cache,
            self.model.dit,
            latents.to(next(self.model.dit.parameters()).dtype),
            self.context,
            empty_context=self.empty_context,
            actions=a,
            poses=pose,
            context_time=self.model.config.context_noise,
            frame_offset=self.latent_frames,
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
        self._check_open()
        a = self.parse_actions(actions)
        R, P = self._integrate(a)
        cond_a, cond_pose = self._conditioning(a, R, P)
        start = time.perf_counter()
        (block,) = stream_blocks(
            self.model.dit,
            self.cache,
            self.context,
            num_blocks=1,
            latent_size=self.model.latent_size,
            schedule=self.model.schedule,
            generator=self.generator,
            actions=[cond_a],
            poses=[cond_pose],
            start_frame=self.latent_frames,
            context_noise=self.model.config.context_noise,
            policy=self.policy,
            empty_context=self.empty_context,
        )
        self.timings["denoise_s"] += time.perf_counter() - start
        self.latent_frames += block.shape[1]
        self._record(a, R, P)
        return block

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
            self._write(latents[:, b * fpb : (b + 1) * fpb], a, R, P)
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
