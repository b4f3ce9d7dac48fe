"""`WanDiT`: our Wan2.1 text-to-video DiT, the backbone of the world model (RELIC §4.1).

    latents (B, T, C, H, W) --patchify (1,2,2)--> tokens (B, T*h*w, D)
    flow time t (B,) | (B, T) --1000 t--> sinusoid --> time MLP --> shared projection (6 D)
    text (B, L, D_text) --> text MLP --> (B, L, D)
    actions (B, T_video, 13), poses (R, P) --> zero-init per-block additions (RELIC §4.1.2)
    N x [adaLN self-attn (3D RoPE, + pose on Q/K) -> + action -> text cross-attn -> adaLN FFN]
    --> adaLN head --> unpatchify --> flow-matching velocity (B, T, C, H, W)
        (or clean latents x0 when `prediction == "x0"`, returned as the velocity `(x - x0) / t`)

One backbone serves the bidirectional teacher, the block-causal student and KV-cached streaming
(`AttentionConfig`, `KVCache`). Reproduces diffusers' `WanTransformer3DModel` to fp32 precision
(`from_diffusers`) and loads Wan2.1 reference checkpoints by name (`load_wan_state_dict`).
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from reverie.models.attention import (
    AttentionMode,
    PooledContext,
    PooledKeys,
    query_block_sizes,
    teacher_forcing_mask,
)
from reverie.models.blocks import BLOCK_MODULATIONS, OutputHead, WanBlock
from reverie.models.conditioning import (
    WAN_TIMESTEP_SCALE,
    ActionEncoder,
    PoseEncoder,
    sinusoidal_embedding,
)
from reverie.models.config import WanDiTConfig
from reverie.models.kv_cache import CachedFrame, KVCache
from reverie.models.rope import RotaryEmbedding3D, grid_positions
from reverie.models.state_dicts import (
    NEW_MODULE_PREFIXES,
    config_from_diffusers,
    diffusers_to_wan_state_dict,
    load_state_dict_checked,
    strip_wan_prefix,
)

# Std of the normal init of Wan's text and time embedding MLPs (Wan2.1 `init_weights`).
EMBEDDING_INIT_STD = 0.02
# x0-predicting models return the velocity `(x - x0) / max(t, X0_MIN_TIME)`: exact wherever a
# sampler or loss reads x0 back as `x - t v` (t >= this), finite on clean frames (t = 0).
X0_MIN_TIME = 1e-3


class WanDiT(nn.Module):
    """Wan2.1 DiT with per-frame flow time, block-causal/cached attention, actions and poses."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, BLOCK_MODULATIONS * dim))
        self.blocks = nn.ModuleList(
            WanBlock(
                dim,
                config.ffn_dim,
                config.num_heads,
                config.qk_norm,
                config.cross_attn_norm,
                config.eps,
            )
            for _ in range(config.num_layers)
        )
        self.head = OutputHead(dim, config.patch_features, config.eps)
        self.rope = RotaryEmbedding3D(config.head_dim, config.rope)
        stride, layers = config.vae_temporal_stride, config.num_layers
        self.action_encoder = (
            None if config.actions is None else ActionEncoder(config.actions, stride, dim, layers)
        )
        self.pose_encoder = (
            None if config.poses is None else PoseEncoder(config.poses, stride, dim, layers)
        )
        self.init_weights()

    # ------------------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_weights(self) -> None:
        """All initialisation in one place (Wan2.1 `init_weights` + RELIC's zero-init).

        Xavier-uniform linears with zero bias; normal(0.02) text/time embeddings; Wan's random
        adaLN tables (`randn / sqrt(D)`); zero output head; **zero** per-block action and pose
        projections, so new modules leave a loaded Wan model's output unchanged.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for embedding in (self.text_embedding, self.time_embedding):
            for module in embedding:
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=EMBEDDING_INIT_STD)
        scale = self.config.dim**-0.5
        for table in [block.modulation for block in self.blocks] + [self.head.modulation]:
            table.copy_(torch.randn_like(table) * scale)
        nn.init.zeros_(self.head.head.weight)
        for encoder in (self.action_encoder, self.pose_encoder):
            if encoder is not None:
                for proj in encoder.proj:
                    nn.init.zeros_(proj.weight)
                    nn.init.zeros_(proj.bias)

    # ----------------------------------------------------------------------- boundary helpers
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Latents to tokens (the only place Wan's channel-first layout appears).

        Shapes: x `(B, T, C, H, W)` -> `(B, T * h * w, D)`, `h = H / ph`, `w = W / pw`.
        """
        x = rearrange(x, "b t c h w -> b c t h w")
        x = self.patch_embedding(x)  # (B, D, T, h, w)
        return rearrange(x, "b d t h w -> b (t h w) d")

    def unpatchify(self, x: torch.Tensor, num_frames: int, height: int, width: int):
        """Tokens to latents. Shapes: `(B, T * h * w, pt * ph * pw * C)` -> `(B, T, C, H, W)`."""
        pt, ph, pw = self.config.patch_size
        return rearrange(
            x,
            "b (t h w) (pt ph pw c) -> b (t pt) c (h ph) (w pw)",
            t=num_frames,
            h=height,
            w=width,
            pt=pt,
            ph=ph,
            pw=pw,
        )

    def embed_time(self, t: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow time -> time embedding and shared modulation (Wan `time_embedding/projection`).

        Shapes:
            t: `(B,)` or per-frame `(B, T)`, in [0, 1] (1 = noise).
            returns `(emb (B, T|1, D), mod (B, T|1, 6, D))`, float32.
        """
        if t.ndim == 1:
            t = t[:, None]  # (B, 1)
        if t.ndim != 2 or t.shape[1] not in (1, num_frames):
            raise ValueError(f"t must be (B,) or (B, {num_frames}), got {tuple(t.shape)}")
        batch, frames = t.shape
        sinusoid = sinusoidal_embedding(t.reshape(-1) * WAN_TIMESTEP_SCALE, self.config.freq_dim)
        dtype = self.time_embedding[0].weight.dtype
        emb = self.time_embedding(sinusoid.to(dtype)).float()  # (B * T|1, D)
        mod = self.time_projection(emb.to(dtype)).float()  # (B * T|1, 6 D)
        emb = emb.reshape(batch, frames, -1)  # (B, T|1, D)
        return emb, mod.reshape(batch, frames, BLOCK_MODULATIONS, -1)  # (B, T|1, 6, D)

    # ---------------------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        *,
        actions: torch.Tensor | None = None,
        poses: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        write_cache: bool = False,
        frame_offset: int | None = None,
        clean: torch.Tensor | None = None,
        context_visible: torch.Tensor | None = None,
        pooled_context: PooledContext | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity of a chunk of latent frames.

        Shapes:
            x: latents `(B, T, C, H, W)`, `H, W` divisible by the spatial patch.
            t: flow time `(B,)` or per latent frame `(B, T)`, in [0, 1] (Wan timestep 1000 t).
            context: text-encoder states `(B, L, text_dim)`; pad/mask as the text encoder's
                wrapper decides (Wan pads umT5 states with zeros to 512 tokens).
            actions: `(B, T_video, 13)` per video frame (docs/conventions.md); `T_video =
                1 + 4 (T - 1)` if the chunk starts at latent frame 0, else `4 T`.
            poses: `(R (B, T_video, 3, 3) world-to-camera, P (B, T_video, 3) metres)`.
            cache: context of earlier frames, all visible to this chunk (read-only unless
                `write_cache`); the model never evicts.
            write_cache: append this chunk's keys/values (one call, after the last block).
            frame_offset: absolute latent-frame index of `x[:, 0]` (RoPE, block boundaries,
                action grouping); default `cache.next_frame`, or 0 without a cache.
            clean: teacher forcing (`teacher_forcing_mask`): `(B, T, C, H, W)` clean latents
                of the same frames, run as a block-causal context at t = 0 before `x`, block
                `j` of `x` seeing clean blocks `< j` and itself; block-causal models only, no
                cache. The actions and poses are the frames' (shared by both copies).
            context_visible: with `clean`, `(T, T)` or `(B, T, T)` bool: the earlier clean
                frames each frame may see, as a memory policy's cache would hold them
                (`teacher_forcing_mask`, `reverie.memory.context_layout`); None: all.
            pooled_context: with `clean`, spatially pooled copies of the clean frames that
                frames may attend to besides `context_visible`'s (`PooledContext`: a pooling
                memory policy's context, e.g. `relic`).
            returns velocity `(B, T, C_out, H, W)` in x's dtype (of `x` only, with `clean`).

        Raises:
            ValueError: on inconsistent shapes, or conditioning the model has no encoder for.
        """
        cfg = self.config
        batch, num_frames, _, height, width = x.shape
        _, ph, pw = cfg.patch_size
        if height % ph or width % pw:
            raise ValueError(f"latent size {height}x{width} is not divisible by the patch")
        h, w = height // ph, width // pw
        if frame_offset is None:
            frame_offset = 0 if cache is None else cache.next_frame
        if write_cache and cache is None:
            raise ValueError("write_cache=True needs a cache")
        if cache is not None and cache.rope != self.rope:
            raise ValueError(
                "the cache does not apply this model's RoPE; create it with model.new_cache()"
            )

        positions = grid_positions(num_frames, h, w, frame_offset, x.device)  # (N, 3)
        attn_mask, copies, x_in, t_in, pooled = None, 1, x, t, None
        if clean is not None:
            if cache is not None or cfg.attention.mode is not AttentionMode.BLOCK_CAUSAL:
                raise ValueError("clean= (teacher forcing) needs a block-causal model, no cache")
            if clean.shape != x.shape:
                raise ValueError(f"clean {tuple(clean.shape)} must match x {tuple(x.shape)}")
            copies, x_in = 2, torch.cat([clean.to(x.dtype), x], dim=1)  # (B, 2T, C, H, W)
            t_frames = t[:, None].expand(batch, num_frames) if t.ndim == 1 else t  # (B, T)
            t_in = torch.cat([torch.zeros_like(t_frames), t_frames], dim=1)  # (B, 2T)
            positions = positions.repeat(2, 1)  # (2N, 3): both copies at the same place
            fpb = cfg.attention.frames_per_block
            attn_mask = teacher_forcing_mask(
                num_frames, fpb, h * w, frame_offset, context_visible
            ).to(x.device)
            if pooled_context is not None:
                attn_mask, pooled = self._pooled_keys(pooled_context, attn_mask, positions, h * w)
            if attn_mask.ndim == 3:  # one mask per sample: add the head axis
                attn_mask = attn_mask[:, None]  # (B, 1, 2N, 2N [+ Np])
        elif context_visible is not None or pooled_context is not None:
            raise ValueError("context_visible and pooled_context need clean= (teacher forcing)")
        tokens = self.patchify(x_in)  # (B, N', D), N' = copies*T*h*w
        frames_in = copies * num_frames
        time_emb, time_mod = self.embed_time(t_in, frames_in)  # (B, T'|1, D), (B, T'|1, 6, D)
        text = self.text_embedding(context.to(tokens.dtype))  # (B, L, D)
        cos, sin = self.rope(positions)  # (N', Dh/2) each
        block_sizes = query_block_sizes(cfg.attention, num_frames, frame_offset, h * w)
        pasts = [None] * cfg.num_layers
        if cache is not None and not cache.is_empty:
            pasts = cache.past_for_layers(room=positions.shape[0])
        first = frame_offset == 0
        action_emb = None
        if actions is not None:
            if self.action_encoder is None:
                raise ValueError("actions given but the config has no action encoder")
            action_emb = self.action_encoder(actions, num_frames, first)  # (B, T, hidden)
            action_emb = action_emb.repeat(1, copies, 1)  # (B, T', hidden)
        pose_emb = None
        if poses is not None:
            if self.pose_encoder is None:
                raise ValueError("poses given but the config has no pose encoder")
            pose_emb = self.pose_encoder(*poses, num_frames, first)  # (B, T, hidden)
            pose_emb = pose_emb.repeat(1, copies, 1)  # (B, T', hidden)

        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            action = None if action_emb is None else self.action_encoder.proj[i](action_emb)
            pose_qk = None if pose_emb is None else self.pose_encoder.layer_qk(i, pose_emb)
            tokens, k, v = block(
                tokens,
                frames_in,
                time_mod,
                text,
                cos,
                sin,
                block_sizes,
                action=action,
                pose_qk=pose_qk,
                past=pasts[i],
                attn_mask=attn_mask,
                pooled=pooled,
            )  # (B, N', D), (B, H, N', Dh) x 2
            if write_cache:
                new_keys.append(k)
                new_values.append(v)
        if write_cache:
            frames = [CachedFrame(frame_offset + i, h, w) for i in range(num_frames)]
            cache.append(new_keys, new_values, positions, frames)

        out = self.head(tokens, frames_in, time_emb)  # (B, N', pt*ph*pw*C_out)
        out = out[:, out.shape[1] - num_frames * h * w :]  # (B, N, ...): x's frames
        out = self.unpatchify(out, num_frames, h, w)  # (B, T, C_out, H, W)
        if cfg.prediction == "x0":
            t_frames = t if t.ndim == 2 else t[:, None]  # (B, T|1)
            t_frames = t_frames.float().clamp_min(X0_MIN_TIME)[:, :, None, None, None]
            out = (x.float() - out.float()) / t_frames  # velocity of the predicted x0
        return out.type_as(x)

    def _pooled_keys(
        self,
        context: PooledContext,
        mask: torch.Tensor,
        positions: torch.Tensor,
        tokens_per_frame: int,
    ) -> tuple[torch.Tensor, PooledKeys]:
        """The teacher-forcing mask widened by the pooled tokens' columns, and the pooled keys'
        averaging matrix and RoPE tables (`PooledContext`).

        Shapes: mask `(2N, 2N)` or `(B, 2N, 2N)`; positions `(2N, 3)` (clean copy first);
        returns mask `(.., 2N, 2N + Np)` and `PooledKeys`.
        """
        num_tokens = positions.shape[0] // 2
        pool = context.pool.to(positions.device, torch.float32)  # (Np, N)
        visible = context.visible.to(positions.device, torch.bool)  # (.., T, Np)
        frames = num_tokens // tokens_per_frame
        if (
            pool.ndim != 2
            or pool.shape[1] != num_tokens
            or visible.shape[-2:]
            != (
                frames,
                pool.shape[0],
            )
        ):
            raise ValueError(
                f"pooled_context: pool {tuple(pool.shape)} and visible "
                f"{tuple(visible.shape)} do not fit {frames} frames of {tokens_per_frame} tokens"
            )
        cos, sin = self.rope(pool @ positions[:num_tokens])  # (Np, Dh/2): at pooled positions
        columns = visible.repeat_interleave(tokens_per_frame, dim=-2)  # (.., N, Np)
        columns = torch.cat([columns, columns], dim=-2)  # (.., 2N, Np): clean and noisy rows
        if columns.ndim != mask.ndim:  # one of them per sample
            batch = max(columns.shape[0] if columns.ndim == 3 else 1, mask.shape[0])
            mask = mask.expand(batch, *mask.shape[-2:]) if mask.ndim == 2 else mask
            columns = columns.expand(batch, *columns.shape[-2:])
        return torch.cat([mask, columns], dim=-1), PooledKeys(pool, cos, sin)

    # ----------------------------------------------------------------- construction helpers
    def new_cache(self, storage_dtype: torch.dtype | None = None) -> KVCache:
        """An empty `KVCache` with one slot per block that applies this model's RoPE to keys
        when they are written; `storage_dtype` as `KVCache` (None: as written)."""
        return KVCache(self.config.num_layers, rope=self.rope, storage_dtype=storage_dtype)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters that exist in Wan checkpoints (everything but the new encoders)."""
        return [
            p for name, p in self.named_parameters() if not name.startswith(NEW_MODULE_PREFIXES)
        ]

    def load_wan_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a Wan2.1 reference-format state dict (e.g. `diffusion_pytorch_model*.safetensors`).

        The optional `model.diffusion_model.` prefix is stripped; our new encoders may be absent
        (they stay zero-initialised). Raises `CheckpointKeyError` naming missing/unexpected keys.
        """
        load_state_dict_checked(
            self, strip_wan_prefix(state_dict), allow_missing_prefixes=NEW_MODULE_PREFIXES
        )

    @classmethod
    def from_diffusers(cls, model: nn.Module, **overrides: Any) -> WanDiT:
        """Build a `WanDiT` reproducing a diffusers `WanTransformer3DModel` (same dtype/device).

        `overrides` set our own config fields (`attention`, `rope`, `actions`, `poses`, ...).
        diffusers takes `(B, C, T, H, W)` latents and `timestep = 1000 t`; ours takes
        `(B, T, C, H, W)` and `t`.
        """
        config = config_from_diffusers(model.config, **overrides)
        parameter = next(model.parameters())
        with torch.device(parameter.device):
            ours = cls(config).to(parameter.dtype)
        ours.load_wan_state_dict(diffusers_to_wan_state_dict(model.state_dict()))
        return ours
