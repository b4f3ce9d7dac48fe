"""The memory tier of the world model: which past frames the model attends to while streaming.

Policies share one protocol (`MemoryPolicy`) and are registered by name (STYLE §8):

| name | what stays in the cache | paper (arXiv) |
|---|---|---|
| `full` | every frame, full resolution | Self Forcing 2506.08009 |
| `window` | `sink_frames` first + `window_frames` newest frames | LongLive 2509.22622 |
| `relic` | window + every older frame pooled `S[i mod 18]` per side | RELIC 2512.04040 §4.3 |
| `mag` | last frame of each block, written by a memory model, empty text | MAG 2512.18741 §3.4 |
| `retrieval` | sink + top-k history frames by embedding cosine + window | LongLive-RAG 2606.02553 |

For training, `context_layout(policy, T, frames_per_block, token_grid)` reads off a policy what
its cache holds of each earlier frame before each block (whole frames, pooled frames and their
averaging matrices), so a teacher-forced student can be trained on that context.

The engine owns the `KVCache` and the policy and, per block, runs its denoising passes on the
cache, then `write_block(policy, cache, model, clean_block, text, ...)`, which runs the
write pass with the policy's writer and calls `policy.after_write(cache, clean_block)`.

    policy = get_policy("relic", window_frames=6)
    cache = model.new_cache()
    ...
    write_block(policy, cache, model, x0, text)
    policy.num_tokens(cache), policy.nbytes(cache)

Learned parts (MAG's memory model, the retrieval embedder) are declared by their policy
(`MagPolicy.components`, a `Component` each) and saved/loaded by functions beside their class
(`save_memory_model` / `load_memory_model` in `mag.py`, `save_retrieval_embedder` /
`load_retrieval_embedder` in `embedding.py`); the engine loops over `declared_components()`.
"""

from reverie.memory.cache_ops import FrameTokens, assemble, pool_frame, split_frames
from reverie.memory.embedding import (
    EmbeddingFn,
    PooledLatentEmbedding,
    RetrievalEmbedder,
    RetrievalEmbedderConfig,
    load_retrieval_embedder,
    save_retrieval_embedder,
)
from reverie.memory.full import FullConfig, FullPolicy
from reverie.memory.mag import MagConfig, MagPolicy, load_memory_model, save_memory_model
from reverie.memory.policy import (
    Component,
    MemoryPolicy,
    WriteSpec,
    declared_components,
    get_policy,
    policy_components,
    policy_names,
    register_policy,
)
from reverie.memory.relic import RELIC_SCHEDULE, RelicConfig, RelicPolicy
from reverie.memory.retrieval import RetrievalConfig, RetrievalPolicy, RetrievedTime
from reverie.memory.visibility import ContextLayout, context_layout, context_visibility
from reverie.memory.window import WindowConfig, WindowPolicy
from reverie.memory.writing import write_block

__all__ = [
    "RELIC_SCHEDULE",
    "Component",
    "ContextLayout",
    "EmbeddingFn",
    "FrameTokens",
    "FullConfig",
    "FullPolicy",
    "MagConfig",
    "MagPolicy",
    "MemoryPolicy",
    "PooledLatentEmbedding",
    "RelicConfig",
    "RelicPolicy",
    "RetrievalConfig",
    "RetrievalEmbedder",
    "RetrievalEmbedderConfig",
    "RetrievalPolicy",
    "RetrievedTime",
    "WindowConfig",
    "WindowPolicy",
    "WriteSpec",
    "assemble",
    "context_layout",
    "context_visibility",
    "declared_components",
    "get_policy",
    "load_memory_model",
    "load_retrieval_embedder",
    "policy_components",
    "policy_names",
    "pool_frame",
    "register_policy",
    "save_memory_model",
    "save_retrieval_embedder",
    "split_frames",
    "write_block",
]
