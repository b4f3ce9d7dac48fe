"""`WorldModel`: a packaged interactive world model (its streams: `reverie.engine.session`).

    model = WorldModel.from_pretrained()              # the shipped default (tiny, 64x64)
    session = model.start(image, "a room", memory="relic")
    frames = session.step({"dolly_in", "pan_left"})  # (4, 64, 64, 3) uint8 per step

A packaged model is a directory (`save_pretrained`, `reverie.engine.config`): the generator in
`dit/`, the tokenizer in `vae/`, and one sub-directory per learned memory component (MAG's
memory model, the retrieval embedder), written and read by the `Component` its policy declares
(`reverie.memory.declared_components`), so this file names no policy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from reverie.diffusion.schedule import FewStepSchedule
from reverie.engine.config import CONFIG_NAME, WorldModelConfig
from reverie.engine.images import load_image
from reverie.engine.session import Session
from reverie.io import atomic_write_json, check_safetensors, make_temp_dir
from reverie.memory import (
    MemoryPolicy,
    declared_components,
    get_policy,
    policy_components,
    policy_names,
)
from reverie.models import WanDiT
from reverie.models.checkpoints import load_checkpoint, save_checkpoint
from reverie.text import TextEncoder, get_text_encoder
from reverie.tokenizer import PatchTokenizer, VideoVAE, load_vae, save_vae

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"
DIT_DIR, VAE_DIR = "dit", "vae"
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
    learned memory components (MAG memory model, LongLive-RAG embedder) of one world model.

    Attributes:
        config: `WorldModelConfig`.
        dit: the student, block-causal, eval mode, no grad.
        vae: the tokenizer, `VideoVAE` or `PatchTokenizer` (latent normalisation folded into
            its config).
        components: learned memory components by name (`reverie.memory.declared_components`),
            eval mode, no grad: e.g. `memory_model` (MAG's, same backbone shape as `dit`) and
            `retrieval_embedder` (LongLive-RAG's `RetrievalEmbedder`). A policy whose
            component is absent runs without it (MAG writes with the generator, retrieval
            embeds pooled latents).
        source: where it was loaded from (a directory, or "random").
    """

    def __init__(
        self,
        config: WorldModelConfig,
        dit: WanDiT,
        vae: VideoVAE | PatchTokenizer,
        *,
        components: Mapping[str, nn.Module] | None = None,
        text_encoder: TextEncoder | None = None,
        source: str = "memory",
    ) -> None:
        components = dict(components or {})
        unknown = sorted(set(components) - set(declared_components()))
        if unknown:
            raise ValueError(
                f"no memory policy declares the component(s) {unknown}; known: "
                f"{sorted(declared_components())}"
            )
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
        self.components = {k: m.eval().requires_grad_(False) for k, m in components.items()}
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
        """Policy names this model can run (all registered; a policy whose declared component
        this model lacks runs without it, e.g. `mag` writes with the generator)."""
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

        Each component the policy declares (`policy_components`) that this model holds is
        passed as its keyword (MAG's memory model as `writer`, the trained embedder as
        `embed`); `config.memory[name]` then `options` override the policy's config fields
        (and `options` may replace a component).

        Raises:
            ValueError: unknown policy name (lists the known ones) or a bad option.
        """
        if name not in policy_names():
            raise ValueError(f"unknown memory policy {name!r}; known: {', '.join(policy_names())}")
        kwargs = {**self.config.memory.get(name, {}), **options}
        for key, component in policy_components(name).items():
            if key in self.components:
                kwargs.setdefault(component.keyword, self.components[key])
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
        components = {
            key: _load_part(directory / component.directory, component.load, device=device)
            for key, component in declared_components().items()
            if (directory / component.directory).is_dir()
        }
        try:
            return cls(config, dit, vae, components=components, source=str(directory))
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
            declared = declared_components()
            for key, module in self.components.items():
                component = declared[key]
                component.save(_cast_copy(module, dtype), tmp / component.directory)
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
        kv_dtype: str = "auto",
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
            kv_dtype: KV-cache storage dtype (`KV_DTYPES`): "auto" (the model's compute
                dtype), "fp32", "bf16" or "fp8" (E4M3 with a scale per token and head;
                RELIC §4.5).

        Raises:
            ValueError / FileNotFoundError: bad image, prompt, policy, gamma or kv_dtype.
        """
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
        frame, note = load_image(image, self.resolution)
        policy = self.make_policy(memory, **(memory_options or {}))
        return Session(
            self,
            frame,
            prompt,
            policy,
            gamma=gamma,
            seed=seed,
            image_note=note,
            kv_dtype=KV_DTYPES[kv_dtype],
        )


KV_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp8": torch.float8_e4m3fn,
}
"""KV-cache storage dtypes by name (`WorldModel.start(kv_dtype=...)`, `--kv-dtype`)."""


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


def _cast_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `module` in `dtype` (the original keeps its dtype)."""
    return copy.deepcopy(module).to(dtype)
