"""`reverie play` messages: strict parsing, frame packing, start images."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from reverie.camera.keyboard import KEY_MAP
from reverie.play import images
from reverie.play.protocol import (
    MAX_MESSAGE_CHARS,
    GammaMessage,
    KeysMessage,
    ProtocolError,
    StartMessage,
    StopMessage,
    encode_jpeg,
    pack_frame,
    parse_client_message,
    unpack_frame,
)


def parse(obj) -> object:
    return parse_client_message(obj if isinstance(obj, str) else json.dumps(obj), KEY_MAP)


def test_valid_messages():
    assert parse({"type": "keys", "keys": ["KeyW", "ArrowLeft"], "seq": 3}) == KeysMessage(
        frozenset({"KeyW", "ArrowLeft"}), 3
    )
    assert parse({"type": "keys", "keys": [], "seq": 0}).keys == frozenset()
    assert parse({"type": "gamma", "gamma": 2}) == GammaMessage(2.0)
    assert parse({"type": "stop"}) == StopMessage()
    start = parse({"type": "start", "scene_seed": 7, "memory": "relic", "prompt": ""})
    assert start == StartMessage(7, None, None, "relic", 1.0, 0)  # "" prompt: the caption
    assert parse({"type": "start", "upload_id": "abc", "gamma": 0.5, "seed": 3}).upload_id == "abc"


@pytest.mark.parametrize(
    "message, words",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"keys": []}, "unknown message type"),
        ({"type": "fly"}, "unknown message type"),
        ({"type": "keys", "keys": ["KeyW"]}, "missing field 'seq'"),
        ({"type": "keys", "keys": ["KeyW"], "seq": 1, "extra": 1}, "unknown field"),
        ({"type": "keys", "keys": "KeyW", "seq": 1}, "must be list"),
        ({"type": "keys", "keys": ["KeyW"], "seq": "1"}, "must be int"),
        ({"type": "keys", "keys": ["KeyW"], "seq": True}, "must be int"),
        ({"type": "keys", "keys": ["KeyZ"], "seq": 1}, "unknown key(s) ['KeyZ']"),
        ({"type": "keys", "keys": [3], "seq": 1}, "key-code strings"),
        ({"type": "keys", "keys": ["KeyW"], "seq": -1}, "seq must be in"),
        ({"type": "gamma", "gamma": 0}, "gamma must be in"),
        ({"type": "gamma", "gamma": 1e9}, "gamma must be in"),
        ({"type": "start"}, "exactly one of"),
        ({"type": "start", "scene_seed": 1, "upload_id": "x"}, "exactly one of"),
        ({"type": "start", "scene_seed": -1}, "scene_seed must be in"),
        ({"type": "start", "scene_seed": 1.5}, "must be int"),
        ("x" * (MAX_MESSAGE_CHARS + 1), "too long"),
    ],
)
def test_malformed_messages_say_what_is_wrong(message, words):
    with pytest.raises(ProtocolError) as e:
        parse(message)
    assert words in str(e.value)


def test_frame_packing_round_trip():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:, 8:] = 200
    jpeg = encode_jpeg(frame)
    header, data = unpack_frame(pack_frame({"frame": 3, "seq": 1}, jpeg))
    assert header == {"frame": 3, "seq": 1} and data == jpeg
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == (16, 16, 3) and abs(int(decoded[0, 12, 0]) - 200) < 8
    with pytest.raises(ValueError, match="truncated"):
        unpack_frame(pack_frame({"a": 1}, b"")[:6])


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_decoding_crops_and_rejects_bad_data(monkeypatch):
    img = images.decode_upload(png_bytes(80, 40), 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and tuple(img[5, 5]) == (10, 200, 30)
    for data, words in [(b"", "empty"), (b"\x89PNG garbage" * 10, "not a readable image")]:
        with pytest.raises(ValueError, match=words):
            images.decode_upload(data, 32)
    with pytest.raises(ValueError, match="not a readable image"):
        images.decode_upload(png_bytes(64, 64)[:60], 32)  # truncated PNG
    monkeypatch.setattr(images, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(ValueError, match="too large"):
        images.decode_upload(png_bytes(50, 50), 32)


def test_upload_store_is_bounded():
    store = images.UploadStore(capacity=2)
    for name in "abc":
        store.put(name, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(KeyError):
        store.get("a")
    assert store.get("c").shape == (2, 2, 3)


def test_render_scene_gives_start_view_and_caption():
    start = images.render_scene(3, 32)
    assert start.image.shape == (32, 32, 3) and start.image.dtype == np.uint8
    assert start.image.std() > 1.0  # not a blank frame
    assert isinstance(start.caption, str) and start.caption
    assert start.source == {"kind": "scene", "scene_seed": 3}
