"""One browser tab's play session, and the registry that bounds how many run at once."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from reverie.play.clip import ClipBuffer
from reverie.play.protocol import pack_frame
from reverie.play.stream import Controls, FrameOutbox, OutFrame, StreamLimits, StreamWorker

FPS_WINDOW_S = 2.0  # delivered frames per second are counted over this window
MAX_CLIP_SECONDS = 600.0  # the clip ring buffer holds raw frames: 10 min of 64x64 is 120 MB


@dataclass(frozen=True)
class PlayOptions:
    """Per-server streaming options.

    Attributes:
        clip_seconds: length of the "Save clip" ring buffer, seconds.
        jpeg_quality: 1-95.
        max_pending: frames allowed to be due but unsent before older ones are dropped.
        ack_window: frames sent but not yet acknowledged, for clients that send ``ack``
            (the page does): beyond it frames wait on the server, where stale ones drop.
        idle_timeout_s: a connection that sends no message for this long is closed (the page
            acks every frame it shows, so only a vanished or stopped client is idle).
        stall_pause_s: a stream pauses once no frame was delivered or acknowledged for this
            long (a client that stopped reading), and goes on when it reads again.
        max_stream_s: seconds of video after which a stream ends (press Start to go on).
        max_cache_mb: memory-policy cache size after which a stream ends (`full` and
            `retrieval` keep every frame).

    Raises:
        ValueError: a value that is not finite and positive, or ``clip_seconds`` above
            ``MAX_CLIP_SECONDS``.
    """

    clip_seconds: float = 10.0
    jpeg_quality: int = 90
    max_pending: int = 2
    ack_window: int = 4
    idle_timeout_s: float = 600.0
    stall_pause_s: float = 3.0
    max_stream_s: float = 3600.0
    max_cache_mb: float = 1024.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_seconds) and 0 < self.clip_seconds <= MAX_CLIP_SECONDS):
            raise ValueError(
                f"--clip-seconds must be in (0, {MAX_CLIP_SECONDS:g}], got {self.clip_seconds}"
            )
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        for name in ("idle_timeout_s", "stall_pause_s", "max_stream_s", "max_cache_mb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")

    def limits(self, fps: int) -> StreamLimits:
        """The stream bounds at ``fps``."""
        return StreamLimits(
            max_frames=max(1, round(self.max_stream_s * fps)),
            max_cache_bytes=round(self.max_cache_mb * 2**20),
        )


class PlaySession:
    """The state of one tab: controls, the outbox, the clip, and at most one stream worker.

    Create and use it on the event loop; :meth:`stop` blocks (call it in a thread).
    """

    def __init__(self, session_id: str, model, options: PlayOptions) -> None:
        self.id = session_id
        self.model = model
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.outbox = FrameOutbox(
            max_pending=options.max_pending, capacity=4 * model.frames_per_step
        )
        self.controls = Controls()
        self.clip: ClipBuffer | None = None
        self.worker: StreamWorker | None = None
        self._sent: deque[float] = deque()  # send times within FPS_WINDOW_S
        self.acked: int | None = None  # last frame the client acknowledged (None: no acks)
        self.last_sent = -1
        self.last_progress = time.monotonic()  # the client last took a frame (send or ack)

    # -- called from the worker thread ---------------------------------------------------------
    def _emit(self, item: OutFrame | dict) -> None:
        put = self.outbox.put_frame if isinstance(item, OutFrame) else self.outbox.put_event
        try:
            self.loop.call_soon_threadsafe(put, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            if self.worker is not None:
                self.worker.stop()

    # -- called on the event loop ---------------------------------------------------------------
    def start(
        self, image: np.ndarray, *, prompt: str, memory: str, gamma: float, seed: int, info: dict
    ) -> None:
        """Start a new stream (the previous one must be stopped first)."""
        if self.worker is not None and self.worker.is_alive():
            raise RuntimeError("a stream is still running; stop it first")
        self.outbox.clear_frames()
        self.acked, self.last_sent = None, -1
        self.last_progress = time.monotonic()
        self.controls.set_gamma(gamma)  # held keys carry over to the new stream
        self.clip = ClipBuffer(self.options.clip_seconds, self.model.fps, info)
        self.worker = StreamWorker(
            self.model,
            image,
            prompt=prompt,
            memory=memory,
            gamma=gamma,
            seed=seed,
            controls=self.controls,
            emit=self._emit,
            clip=self.clip,
            jpeg_quality=self.options.jpeg_quality,
            should_pause=self.stalled,
            limits=self.options.limits(self.model.fps),
        )
        self.worker.start()

    def stalled(self) -> bool:
        """True while the client has taken no frame for ``stall_pause_s`` (read from the
        worker thread: a float read, no lock needed)."""
        return time.monotonic() - self.last_progress > self.options.stall_pause_s

    def stop(self) -> None:
        """Stop the stream and wait for its thread (blocking: run with ``asyncio.to_thread``)."""
        worker = self.worker
        if worker is not None:
            worker.stop()
            worker.join()

    def ack(self, frame: int) -> None:
        """The client showed ``frame``: opens the flow-control window.

        Acks of frames not sent by the current stream (late ones from before a restart) are
        ignored.
        """
        if frame > self.last_sent:
            return
        self.acked = frame if self.acked is None else max(self.acked, frame)
        self.last_progress = time.monotonic()
        self.outbox.wake()

    def may_send_frame(self) -> bool:
        """False while ``ack_window`` frames are unacknowledged (clients that ack only)."""
        return self.acked is None or self.last_sent - self.acked < self.options.ack_window

    def frame_message(self, frame: OutFrame) -> bytes:
        """The binary message of ``frame``, its header completed with delivery stats.

        Header fields added: ``fps`` (frames delivered per second over the last 2 s),
        ``dropped`` (frames dropped so far for a slow client), ``key_age_ms`` (server time from
        receiving key message ``seq`` to sending this frame; None before any key message).
        """
        now = time.monotonic()
        self.last_sent = frame.header["frame"]
        self.last_progress = now
        self._sent.append(now)
        while self._sent[0] < now - FPS_WINDOW_S:
            self._sent.popleft()
        span = self._sent[-1] - self._sent[0]
        fps = (len(self._sent) - 1) / span if span > 0 else 0.0
        age = None if frame.key_received_at is None else 1000 * (now - frame.key_received_at)
        header = {
            **frame.header,
            "fps": round(fps, 2),
            "dropped": self.outbox.dropped,
            "key_age_ms": None if age is None else round(age, 1),
        }
        return pack_frame(header, frame.jpeg)


class SessionRegistry:
    """At most ``max_sessions`` sessions at a time, by random unguessable id.

    Used from the event loop only (no lock needed).
    """

    def __init__(self, max_sessions: int) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self.sessions: dict[str, PlaySession] = {}
        self._reserved = 0

    @property
    def active(self) -> int:
        return self._reserved

    def try_reserve(self) -> str | None:
        """A new session id, or None when all slots are taken."""
        if self._reserved >= self.max_sessions:
            return None
        self._reserved += 1
        return secrets.token_urlsafe(12)

    def add(self, session: PlaySession) -> None:
        self.sessions[session.id] = session

    def release(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self._reserved -= 1
