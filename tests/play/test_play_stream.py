"""The streaming pieces: bounded outbox (drops for slow clients), clip buffer, worker."""

import asyncio
import time

import numpy as np
import pytest
from play_testing import FakeModel, pattern

from reverie.camera.keyboard import keys_to_action
from reverie.data.video import read_mp4
from reverie.play.clip import ClipBuffer
from reverie.play.stream import Controls, FrameOutbox, OutFrame, StreamWorker


def frame(t: float, i: int) -> OutFrame:
    return OutFrame(t, b"jpeg", {"frame": i}, None)


def test_outbox_drops_overdue_frames_beyond_max_pending():
    async def run():
        box = FrameOutbox(max_pending=2, capacity=100)
        past = time.monotonic() - 1.0
        for i in range(10):  # a client that stalled for a while: all ten are overdue
            box.put_frame(frame(past, i))
        box.put_event({"type": "ready"})
        got = [await box.get() for _ in range(3)]
        return got, box.dropped

    got, dropped = asyncio.run(run())
    assert got[0] == {"type": "ready"}  # events first, never dropped
    assert [f.header["frame"] for f in got[1:]] == [8, 9] and dropped == 8


def test_outbox_waits_until_due_and_is_bounded():
    async def run():
        box = FrameOutbox(max_pending=2, capacity=3)
        now = time.monotonic()
        for i in range(5):
            box.put_frame(frame(now + 0.05 * i, i))
        t0 = time.monotonic()
        first = await box.get()
        second = await box.get()
        return first, second, time.monotonic() - t0, box.dropped

    first, second, waited, dropped = asyncio.run(run())
    assert dropped == 2 and first.header["frame"] == 2 and second.header["frame"] == 3
    assert waited >= 0.1  # frame 3 was due 0.15 s after the start


def test_clip_buffer_keeps_the_last_seconds(tmp_path):
    clip = ClipBuffer(seconds=0.5, fps=16, info={"prompt": "p"})
    for i in range(20):
        img = np.full((16, 16, 3), 10 * i, np.uint8)
        assert clip.add(img, keys_to_action({"KeyW"}), frozenset({"KeyW"}), 1.0) == i
    frames, log = clip.snapshot()
    assert frames.shape == (8, 16, 16, 3) and frames[0, 0, 0, 0] == 120
    assert log["first_frame"] == 12 and [e["frame"] for e in log["frames"]] == list(range(12, 20))
    assert log["frames"][0]["keys"] == ["KeyW"] and len(log["frames"][0]["action"]) == 13
    assert log["prompt"] == "p" and log["action_names"][0] == "dolly_in"
    (tmp_path / "c.mp4").write_bytes(clip.mp4_bytes())
    assert read_mp4(tmp_path / "c.mp4").shape == (8, 16, 16, 3)
    with pytest.raises(ValueError, match="no frames"):
        ClipBuffer(1.0, 16).snapshot()


def run_worker(model, controls, seconds, then=None):
    """Run a worker for ``seconds``; with ``then = (after_s, fn)``, call ``fn()`` after
    ``after_s`` seconds and keep running for ``seconds`` more."""
    items = []
    clip = ClipBuffer(10.0, model.fps)
    worker = StreamWorker(
        model,
        pattern(),
        prompt="",
        memory="relic",
        gamma=1.0,
        seed=0,
        controls=controls,
        emit=items.append,
        clip=clip,
    )
    worker.start()
    if then is not None:
        time.sleep(then[0])
        then[1]()
    time.sleep(seconds)
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()
    return items, clip


def test_worker_paces_to_real_time_and_follows_controls():
    model = FakeModel()
    controls = Controls()
    controls.set_keys(frozenset({"KeyD"}), seq=5)
    controls.set_gamma(2.0)
    items, clip = run_worker(model, controls, 0.6)
    assert items[0]["type"] == "ready"
    frames = [i for i in items if isinstance(i, OutFrame)]
    times = np.array([f.present_at for f in frames])
    # A fast model is paced to 16 fps and runs at most about a block ahead of real time.
    assert 8 <= len(frames) <= 20 and np.allclose(np.diff(times), 1 / 16, atol=1e-3)
    assert frames[-1].header["seq"] == 5 and frames[-1].header["action"] == {"truck_right": 1.0}
    assert model.started[0].gammas[-1] == 2.0 and model.closed == 1
    assert frames[0].header["frame"] == 0 and len(clip) == len(frames)


def test_a_key_change_redoes_the_uncommitted_block():
    model = FakeModel(step_s=0.02)
    controls = Controls()
    # Mid-block, while the next block is proposed and held:
    press = (0.4, lambda: controls.set_keys(frozenset({"KeyA"}), seq=1))
    items, _ = run_worker(model, controls, 0.5, then=press)
    pressed = controls.snapshot().received_at
    frames = [i for i in items if isinstance(i, OutFrame)]
    first = next(f for f in frames if f.header["seq"] == 1)
    # The block held at the key change was denoised again, so the new keys show from the next
    # block boundary on (at most one block after the press), not one block later.
    assert first.present_at - pressed <= 4 / 16 + 0.05
    assert first.header["action"] == {"truck_left": 1.0}
    session = model.started[0]
    blocks = (len(frames) - 1) // model.frames_per_step
    assert session.proposals >= blocks + 2  # one redone at the key change, one still held


def test_worker_reports_engine_errors_without_raising():
    items, _ = run_worker(FakeModel(fail_start=True), Controls(), 0.1)
    assert items == [
        {"type": "error", "message": "could not start: fake start failure", "stopped": True}
    ]


def test_outbox_holds_frames_back_while_the_client_window_is_full():
    async def run():
        box = FrameOutbox(max_pending=2, capacity=100)
        past = time.monotonic() - 1.0
        for i in range(6):
            box.put_frame(frame(past, i))
        window = {"open": False}
        task = asyncio.ensure_future(box.get(lambda: window["open"]))
        await asyncio.sleep(0.05)
        assert not task.done() and box.dropped == 4  # held back; only 2 pending kept
        window["open"] = True
        box.wake()
        return await asyncio.wait_for(task, 1.0)

    assert asyncio.run(run()).header["frame"] == 4
