"""The streaming loop of one play session: a generation thread, held controls, a bounded outbox.

Three parts, so that generation never waits on the network:

- :class:`Controls` — the latest held keys and gamma, written by the WebSocket receive loop and
  read by the generator (thread-safe, no queue: older key states are simply overwritten; the
  generator can wait for the next change).
- :class:`StreamWorker` — one thread per session: starts the engine session, then loops
  ``read controls -> Session.propose -> (wait) -> Session.commit -> JPEG-encode -> hand frames
  to the event loop``. The next block is denoised as soon as the previous one is committed and
  denoised again whenever the controls change before it is due; it is committed (cache write,
  decode) just in time for its first frame. A key change therefore waits for the next block
  boundary or for one re-denoise, whichever is later, instead of the boundary plus a whole step.
  It paces itself against a presentation clock (at most one block ahead of real time), not
  against the client; it pauses while the client has stopped taking frames (``should_pause``),
  and ends the stream at a maximum length or memory-cache size (``StreamLimits``).
- :class:`FrameOutbox` — lives on the event loop; the sender coroutine takes frames from it when
  they are due. When the client is slow, frames that are overdue beyond ``max_pending`` are
  dropped (counted), so nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from reverie.camera.actions import ACTION_NAMES
from reverie.camera.keyboard import keys_to_action
from reverie.play.clip import ClipBuffer
from reverie.play.protocol import encode_jpeg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlState:
    """One snapshot of the client's controls.

    ``received_at`` is the server's ``time.monotonic()`` (seconds) when key message ``seq``
    arrived (None before any key message).
    """

    keys: frozenset[str] = frozenset()
    seq: int = -1
    received_at: float | None = None
    gamma: float = 1.0


class Controls:
    """Latest-value store for the held keys and gamma (thread-safe); the generator can wait
    for the next change (`wait_for_change`)."""

    def __init__(self, gamma: float = 1.0) -> None:
        self._changed = threading.Condition()
        self._state = ControlState(gamma=gamma)

    def set_keys(self, keys: frozenset[str], seq: int) -> None:
        with self._changed:
            s = self._state
            self._state = ControlState(keys, seq, time.monotonic(), s.gamma)
            self._changed.notify_all()

    def set_gamma(self, gamma: float) -> None:
        with self._changed:
            s = self._state
            self._state = ControlState(s.keys, s.seq, s.received_at, gamma)
            self._changed.notify_all()

    def snapshot(self) -> ControlState:
        with self._changed:
            return self._state

    def wait_for_change(self, since: ControlState, timeout: float) -> ControlState:
        """The latest state as soon as it is not ``since``, or after ``timeout`` seconds
        (``since`` itself when nothing changed; returns at once for ``timeout <= 0``)."""
        with self._changed:
            self._changed.wait_for(lambda: self._state is not since, max(0.0, timeout))
            return self._state


COMMIT_MARGIN_S = 0.01  # slack before a block's first frame is due when committing it


def _running_mean(mean: float, value: float) -> float:
    return value if mean == 0.0 else 0.8 * mean + 0.2 * value


@dataclass(frozen=True)
class StreamLimits:
    """Bounds of one stream, so that a forgotten tab cannot hold memory or a core forever.

    Attributes:
        max_frames: frames after which the stream ends (its KV cache grows with `full`).
        max_cache_bytes: memory-policy cache size after which the stream ends (`full`,
            `retrieval` keep every frame).
        pause_poll_s: how often a paused stream looks whether the client is back.
    """

    max_frames: int = 16 * 3600
    max_cache_bytes: int = 2**30
    pause_poll_s: float = 0.05


@dataclass
class OutFrame:
    """A JPEG frame waiting to be sent at ``present_at`` (``time.monotonic()`` seconds)."""

    present_at: float
    jpeg: bytes
    header: dict
    key_received_at: float | None


@dataclass
class FrameOutbox:
    """Event-loop side buffer: text events (never dropped) and frames (bounded, drop-oldest).

    Only touch it from the event loop's thread (the worker uses ``call_soon_threadsafe``).

    Args:
        max_pending: frames allowed to be overdue (due but unsent); older overdue ones drop.
        capacity: hard bound on buffered frames (drop-oldest beyond it).
    """

    max_pending: int = 2
    capacity: int = 16
    dropped: int = 0
    _events: collections.deque = field(default_factory=collections.deque)
    _frames: collections.deque = field(default_factory=collections.deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def put_event(self, event: dict) -> None:
        self._events.append(event)
        self._wakeup.set()

    def put_frame(self, frame: OutFrame) -> None:
        self._frames.append(frame)
        while len(self._frames) > self.capacity:
            self._frames.popleft()
            self.dropped += 1
        self._wakeup.set()

    def clear_frames(self) -> None:
        self._frames.clear()

    def _drop_overdue(self, now: float) -> None:
        overdue = sum(f.present_at <= now for f in self._frames)
        for _ in range(overdue - self.max_pending):
            self._frames.popleft()
            self.dropped += 1

    def wake(self) -> None:
        """Make a waiting :meth:`get` look again (e.g. flow control reopened)."""
        self._wakeup.set()

    async def get(self, may_send_frame: Callable[[], bool] = lambda: True) -> dict | OutFrame:
        """The next event, or the next frame once it is due and ``may_send_frame()``.

        Waits; while frames are held back (client flow control), overdue ones beyond
        ``max_pending`` are dropped.
        """
        while True:
            if self._events:
                return self._events.popleft()
            delay = None
            if self._frames:
                now = time.monotonic()
                self._drop_overdue(now)
                if may_send_frame():
                    delay = self._frames[0].present_at - now
                    if delay <= 0:
                        return self._frames.popleft()
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                pass


class StreamWorker(threading.Thread):
    """Generation thread of one session: engine start, then ``propose``/``commit`` per block.

    Args:
        model: the world model (``reverie.engine.WorldModel`` interface).
        image: start image ``(H, W, 3)`` uint8 (resized by the engine).
        prompt, memory, gamma, seed: ``model.start`` arguments; ``gamma`` is the start value.
        controls: read when a block is proposed; a change re-proposes the uncommitted block.
        emit: called from this thread with each :class:`OutFrame` and each event dict
            (``ready``, ``error``); must be thread-safe (the server posts to its event loop).
        clip: receives every generated frame with its action-log entry.
        jpeg_quality: 1-95.
        should_pause: called before each step; while it returns True the worker waits
            (a client that stopped reading costs no compute).
        limits: the stream's maximum length and cache size (`StreamLimits`).

    The velocity coefficient read from the controls is set on the engine session
    (``Session.gamma``, RELIC §5.2) before each proposal, so the slider acts from the next
    uncommitted block.
    """

    def __init__(
        self,
        model,
        image: np.ndarray,
        *,
        prompt: str,
        memory: str,
        gamma: float,
        seed: int,
        controls: Controls,
        emit: Callable[[OutFrame | dict], None],
        clip: ClipBuffer,
        jpeg_quality: int = 90,
        should_pause: Callable[[], bool] = lambda: False,
        limits: StreamLimits | None = None,
    ) -> None:
        super().__init__(name="reverie-play-stream", daemon=True)
        self.model, self.image, self.prompt = model, image, prompt
        self.memory, self.gamma_start, self.seed = memory, gamma, seed
        self.controls, self.emit, self.clip = controls, emit, clip
        self.jpeg_quality = jpeg_quality
        self.should_pause = should_pause
        self.limits = limits or StreamLimits()
        self.frames_out = 0
        self.paused_s = 0.0  # time spent waiting for a stalled client
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Ask the loop to finish after the current step (join to wait for it)."""
        self._stop_event.set()

    def run(self) -> None:
        try:
            session = self.model.start(
                self.image, self.prompt, memory=self.memory, gamma=self.gamma_start, seed=self.seed
            )
        except Exception as e:  # any engine failure becomes a message, not a crash
            log.warning("session start failed: %s", e)
            self.emit({"type": "error", "message": f"could not start: {e}", "stopped": True})
            return
        try:
            self._loop(session)
        except Exception as e:  # likewise: the server process keeps running
            log.exception("stream failed")
            self.emit({"type": "error", "message": f"generation stopped: {e}", "stopped": True})
        finally:
            session.close()

    def _loop(self, session) -> None:
        fps, n = self.model.fps, self.model.frames_per_step
        static = keys_to_action(())
        state = self.controls.snapshot()
        self.emit({"type": "ready", "memory": self.memory, "prompt": self.prompt})
        next_time = time.monotonic()  # when the next block's first frame is due
        self._publish(session, session.first_frame[None], static[None], state, next_time, 0.0)
        next_time += 1.0 / fps
        est_denoise_s = est_commit_s = 0.0  # running means of propose / commit + publish
        proposal = None
        while not self._stop_event.is_set():
            if self._over_limit(session):
                break
            if self.should_pause():  # the client stopped taking frames: wait, do not compute
                tic = time.monotonic()
                if self._stop_event.wait(self.limits.pause_poll_s):
                    break
                self.paused_s += time.monotonic() - tic
                continue
            if proposal is None:
                state = self.controls.snapshot()
                proposal = self._propose(session, state)
                est_denoise_s = _running_mean(est_denoise_s, proposal.denoise_s)
            # Hold the proposal until it must be committed to be on time; a control change
            # before then denoises the block again with the new keys.
            commit_at = next_time - est_commit_s - COMMIT_MARGIN_S
            while not self._stop_event.is_set():
                latest = self.controls.wait_for_change(state, commit_at - time.monotonic())
                if latest is state:
                    break
                state = latest
                proposal = self._propose(session, state)
                est_denoise_s = _running_mean(est_denoise_s, proposal.denoise_s)
                if time.monotonic() >= commit_at:
                    break
            if self._stop_event.is_set():
                break
            tic = time.perf_counter()
            frames = session.commit(proposal)  # (n, res, res, 3) uint8
            commit_s = time.perf_counter() - tic
            # Frames of a block are spread over the time the next block takes, at most fps.
            spacing = max(1.0 / fps, (est_denoise_s + est_commit_s) / n)
            base = max(next_time, time.monotonic())
            actions = proposal.actions  # (n, 13): the held action per frame
            step_s = proposal.denoise_s + commit_s
            self._publish(session, frames, actions, state, base, step_s, spacing=spacing)
            est_commit_s = _running_mean(est_commit_s, time.perf_counter() - tic)
            next_time = base + len(frames) * spacing
            proposal = None

    def _propose(self, session, state: ControlState):
        """``Session.propose`` of the next block with the controls of ``state`` (nothing is
        written); the proposal carries its per-frame ``actions`` and ``denoise_s``."""
        session.gamma = state.gamma
        return session.propose(keys_to_action(state.keys))  # held for the whole step

    def _over_limit(self, session) -> bool:
        """Ends the stream (with a message) at the maximum length or cache size."""
        seconds = self.limits.max_frames / self.model.fps
        if self.frames_out >= self.limits.max_frames:
            why = f"the stream reached its maximum length ({seconds:g} s)"
        elif session.stats()["cache_bytes"] > self.limits.max_cache_bytes:
            mb = self.limits.max_cache_bytes / 2**20
            why = f"the {self.memory} memory cache reached its limit ({mb:.0f} MB)"
        else:
            return False
        self.emit({"type": "error", "message": f"{why}; press Start to go on", "stopped": True})
        return True

    def _publish(
        self,
        session,
        frames: np.ndarray,
        actions: np.ndarray,
        state: ControlState,
        base: float,
        step_s: float,
        spacing: float = 0.0,
    ) -> None:
        """Encode, log and emit ``frames (k, H, W, 3)`` with their ``actions (k, 13)``."""
        stats = session.stats()
        for i, (frame, action) in enumerate(zip(frames, actions, strict=True)):
            index = self.clip.add(frame, action, state.keys, state.gamma)
            header = {
                "frame": index,
                "seq": state.seq,
                "step_ms": round(1000 * step_s, 1),
                "gen_fps": round(len(frames) / step_s, 2) if step_s > 0 else None,
                "cache_tokens": int(stats["cache_tokens"]),
                "cache_bytes": int(stats["cache_bytes"]),
                "action": {
                    name: round(float(v), 3)
                    for name, v in zip(ACTION_NAMES, action, strict=True)
                    if v
                },
            }
            jpeg = encode_jpeg(frame, self.jpeg_quality)
            self.emit(OutFrame(base + i * spacing, jpeg, header, state.received_at))
            self.frames_out += 1
