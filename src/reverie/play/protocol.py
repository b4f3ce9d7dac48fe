"""The `reverie play` WebSocket protocol: strict parsing of client messages, frame packing.

Client -> server: JSON text messages, each an object with a ``type`` field (docs/play.md):

    {"type": "start", "scene_seed": 7, "prompt": "", "memory": "relic", "gamma": 1.0, "seed": 0}
    {"type": "start", "upload_id": "<id from POST /api/upload>", ...}
    {"type": "keys", "keys": ["KeyW", "ArrowLeft"], "seq": 12}
    {"type": "gamma", "gamma": 0.5}
    {"type": "ack", "frame": 41}       (optional flow control: frame 41 was shown)
    {"type": "stop"}

Unknown types, unknown or missing fields and wrong types raise :class:`ProtocolError`; the
server answers ``{"type": "error", "message": ...}`` and keeps the connection.

Server -> client: JSON text messages (``hello``, ``busy``, ``ready``, ``error``, ``stopped``)
and binary frame messages: a 4-byte big-endian header length ``n``, ``n`` bytes of UTF-8 JSON
header (frame index, stats), then the JPEG bytes of one frame (:func:`pack_frame`).
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reverie.engine.world_model import GAMMA_RANGE, check_prompt

MAX_MESSAGE_CHARS = 4096  # client messages are tiny; longer ones are rejected before parsing
MAX_KEYS = 16  # more simultaneously held keys than this is malformed
MAX_SEED = 2**31 - 1
MAX_DEPTH = 4  # client messages are flat objects (keys: one list); deeper nesting is malformed
_HEADER = struct.Struct(">I")


class ProtocolError(ValueError):
    """A client message that does not follow the protocol; the text is shown to the user."""


@dataclass(frozen=True)
class StartMessage:
    """Start (or restart) the stream from a procedural scene or an uploaded image.

    Exactly one of ``scene_seed`` / ``upload_id`` is set. ``prompt`` None means the scene's
    caption (or "" for an upload); ``memory`` None means the server's default policy.
    """

    scene_seed: int | None
    upload_id: str | None
    prompt: str | None
    memory: str | None
    gamma: float
    seed: int


@dataclass(frozen=True)
class KeysMessage:
    """The complete set of held keys (`KeyboardEvent.code` names) and the client's sequence no."""

    keys: frozenset[str]
    seq: int


@dataclass(frozen=True)
class GammaMessage:
    """New velocity coefficient gamma for the running stream."""

    gamma: float


@dataclass(frozen=True)
class AckMessage:
    """The client has shown frame ``frame``; once a client acks, the server keeps at most
    ``PlayOptions.ack_window`` frames in flight to it and drops the rest."""

    frame: int


@dataclass(frozen=True)
class StopMessage:
    """Stop the stream; the tab keeps its session slot."""


ClientMessage = StartMessage | KeysMessage | GammaMessage | AckMessage | StopMessage

# type -> {field: (python types, required)}
_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "start": {
        "scene_seed": ((int,), False),
        "upload_id": ((str,), False),
        "prompt": ((str,), False),
        "memory": ((str,), False),
        "gamma": ((int, float), False),
        "seed": ((int,), False),
    },
    "keys": {"keys": ((list,), True), "seq": ((int,), True)},
    "gamma": {"gamma": ((int, float), True)},
    "ack": {"frame": ((int,), True)},
    "stop": {},
}


def _check_fields(kind: str, msg: Mapping) -> None:
    schema = _SCHEMAS[kind]
    unknown = sorted(set(msg) - set(schema) - {"type"})
    if unknown:
        raise ProtocolError(
            f"{kind!r} message: unknown field(s) {unknown}; allowed {sorted(schema)}"
        )
    for name, (types, required) in schema.items():
        if name not in msg:
            if required:
                raise ProtocolError(f"{kind!r} message: missing field {name!r}")
            continue
        value = msg[name]
        # bool is an int subclass in Python, but true/false is never a valid number here.
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ProtocolError(
                f"{kind!r} message: field {name!r} must be {want}, got {type(value).__name__}"
            )


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _check_text(kind: str, msg: Mapping) -> None:
    """Every string field must be valid Unicode text (JSON allows lone surrogates, "\\ud800",
    which no tokenizer or encoder takes)."""
    for name, value in msg.items():
        if isinstance(value, str):
            try:
                check_prompt(value, f"{kind!r} message: field {name!r}")
            except ValueError as e:
                raise ProtocolError(str(e)) from None


def _check_gamma(gamma: float) -> float:
    lo, hi = GAMMA_RANGE
    if not (math.isfinite(gamma) and lo <= gamma <= hi):
        raise ProtocolError(f"gamma must be in [{lo}, {hi}], got {gamma}")
    return float(gamma)


def _check_seed(name: str, seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise ProtocolError(f"{name} must be in [0, {MAX_SEED}], got {seed}")
    return seed


def parse_client_message(text: str, known_keys: Mapping[str, str]) -> ClientMessage:
    """Parse and validate one client text message.

    Args:
        text: the raw WebSocket text.
        known_keys: accepted key codes (``reverie.camera.keyboard.KEY_MAP``).

    Raises:
        ProtocolError: too long, not JSON, not an object, unknown ``type``, unknown / missing
            fields, wrong field types, unknown keys, out-of-range values. The message says which.
    """
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message too long ({len(text)} > {MAX_MESSAGE_CHARS} characters)")
    too_deep = ProtocolError(f"message is nested too deeply (at most {MAX_DEPTH} levels)")
    try:
        msg = json.loads(text)
        depth = _depth(msg)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"message is not valid JSON ({e.msg})") from None
    except RecursionError:
        raise too_deep from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object with a 'type' field")
    if depth > MAX_DEPTH:
        raise too_deep
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {sorted(_SCHEMAS)}")
    _check_fields(kind, msg)
    _check_text(kind, msg)
    if kind == "keys":
        keys = msg["keys"]
        if len(keys) > MAX_KEYS or not all(isinstance(k, str) for k in keys):
            raise ProtocolError(f"'keys' must be a list of at most {MAX_KEYS} key-code strings")
        unknown = sorted(set(keys) - set(known_keys))
        if unknown:
            raise ProtocolError(f"unknown key(s) {unknown}; valid keys: {', '.join(known_keys)}")
        return KeysMessage(keys=frozenset(keys), seq=_check_seed("seq", msg["seq"]))
    if kind == "gamma":
        return GammaMessage(gamma=_check_gamma(msg["gamma"]))
    if kind == "ack":
        return AckMessage(frame=_check_seed("frame", msg["frame"]))
    if kind == "stop":
        return StopMessage()
    if ("scene_seed" in msg) == ("upload_id" in msg):
        raise ProtocolError("'start' needs exactly one of 'scene_seed' or 'upload_id'")
    prompt = msg.get("prompt")  # its length and text were checked by `_check_text`
    scene_seed = msg.get("scene_seed")
    return StartMessage(
        scene_seed=None if scene_seed is None else _check_seed("scene_seed", scene_seed),
        upload_id=msg.get("upload_id"),
        prompt=prompt if prompt else None,
        memory=msg.get("memory"),
        gamma=_check_gamma(msg.get("gamma", 1.0)),
        seed=_check_seed("seed", msg.get("seed", 0)),
    )


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of one frame.

    Shapes: frame ``(H, W, 3)`` uint8 RGB.
    """
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pack_frame(header: Mapping, jpeg: bytes) -> bytes:
    """One binary frame message: ``uint32 big-endian len(h) | h (JSON, UTF-8) | jpeg``."""
    h = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(h)) + h + jpeg


def unpack_frame(data: bytes) -> tuple[dict, bytes]:
    """Inverse of :func:`pack_frame`: ``(header, jpeg)``.

    Raises:
        ValueError: the data is shorter than its declared header.
    """
    if len(data) < _HEADER.size:
        raise ValueError("frame message shorter than its 4-byte header length")
    (n,) = _HEADER.unpack_from(data)
    if len(data) < _HEADER.size + n:
        raise ValueError(f"frame message truncated: header of {n} bytes declared")
    header = json.loads(data[_HEADER.size : _HEADER.size + n])
    return header, bytes(data[_HEADER.size + n :])
