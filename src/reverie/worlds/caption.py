"""Scene captions built from a :class:`SceneSpec`.

Following RELIC §3.3, captions describe the scene's content (rooms, surfaces, objects, posters,
landmarks) and never the camera motion, so that text never contradicts the user's actions.
"""

from __future__ import annotations

import numpy as np

from reverie.worlds.spec import ObjectSpec, RoomSpec, SceneSpec, TextureSpec

COLOR_NAMES = {
    "black": (0.05, 0.05, 0.05),
    "gray": (0.5, 0.5, 0.5),
    "white": (0.95, 0.95, 0.95),
    "red": (0.8, 0.15, 0.15),
    "orange": (0.9, 0.5, 0.1),
    "yellow": (0.9, 0.85, 0.2),
    "green": (0.2, 0.7, 0.25),
    "teal": (0.15, 0.6, 0.6),
    "blue": (0.2, 0.3, 0.85),
    "purple": (0.55, 0.25, 0.7),
    "pink": (0.9, 0.5, 0.7),
    "brown": (0.5, 0.32, 0.15),
    "olive": (0.5, 0.5, 0.15),
    "navy": (0.1, 0.12, 0.4),
    "maroon": (0.45, 0.1, 0.15),
    "beige": (0.85, 0.8, 0.65),
}
PHOTO_WORDS = {
    "astronaut": "an astronaut",
    "coffee": "a cup of coffee",
    "chelsea": "a cat",
    "rocket": "a rocket",
    "hubble_deep_field": "distant galaxies",
    "immunohistochemistry": "stained cells",
    "retina": "a retina",
    "colorwheel": "a colour wheel",
    "stereo_motorcycle": "a motorcycle",
    "camera": "a cameraman",
    "coins": "old coins",
    "moon": "the moon",
    "text": "handwritten text",
    "clock": "a clock",
    "page": "a printed page",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
}
PATTERN_WORDS = {
    "checker": "checkered",
    "stripes": "striped",
    "noise": "mottled",
    "bricks": "brick-patterned",
    "dots": "polka-dot",
    "planks": "wooden plank",
    "tiles": "tiled",
    "gradient": "shaded",
}
NUMBERS = ("no", "one", "two", "three", "four", "five", "six")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def color_name(rgb) -> str:
    """Nearest colour word for an RGB triple in [0, 1]."""
    rgb = np.asarray(rgb[:3], dtype=np.float64)
    return min(COLOR_NAMES, key=lambda n: float(np.sum((np.asarray(COLOR_NAMES[n]) - rgb) ** 2)))


def texture_words(tex: TextureSpec) -> str:
    """E.g. ``"red and gray checkered"`` or ``"gravel"``."""
    if tex.pattern == "photo":
        return PHOTO_WORDS[tex.photo]
    c1, c2 = color_name(tex.color1), color_name(tex.color2)
    colors = c1 if c1 == c2 else f"{c1} and {c2}"
    return f"{colors} {PATTERN_WORDS[tex.pattern]}"


def object_words(o: ObjectSpec) -> str:
    """E.g. ``"a large blue box"``."""
    extent = max(o.size)
    size = "small" if extent < 0.25 else ("large" if extent > 0.5 else "")
    if o.name in ("building", "tower", "tree", "billboard"):
        noun = o.name
    else:
        noun = o.shape
    color = "" if o.texture is not None and o.texture.pattern == "photo" else color_name(o.rgba)
    words = " ".join(w for w in (size, color, noun) if w)
    article = "an" if words[0] in "aeiou" else "a"
    return f"{article} {words}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _room_sentence(room: RoomSpec, objects: list[ObjectSpec], name: str) -> str:
    walls = sorted({texture_words(w) for w in room.walls})
    parts = [f"{_join(walls)} walls", f"a {texture_words(room.floor)} floor"]
    sentence = f"The {name} has {_join(parts)}"
    if room.posters:
        sentence += ", with posters of " + _join([PHOTO_WORDS[p.photo] for p in room.posters])
    sentence += "."
    if objects:
        sentence += " It contains " + _join([object_words(o) for o in objects]) + "."
    return sentence


def _in_room(o: ObjectSpec, room: RoomSpec) -> bool:
    return room.x0 <= o.pos[0] <= room.x1 and room.y0 <= o.pos[1] <= room.y1


def scene_caption(spec: SceneSpec) -> str:
    """One paragraph describing the scene's content (no camera motion, RELIC §3.3)."""
    if spec.kind == "indoor":
        n = len(spec.rooms)
        head = (
            "An indoor scene with a single room."
            if n == 1
            else f"An indoor scene with {NUMBERS[n] if n < len(NUMBERS) else n} connected rooms "
            f"joined by doorways."
        )
        body = [
            _room_sentence(
                r,
                [o for o in spec.objects if _in_room(o, r)],
                "room" if n == 1 else f"{ORDINALS[k % len(ORDINALS)]} room",
            )
            for k, r in enumerate(spec.rooms)
        ]
        return " ".join([head, *body])
    ground = texture_words(spec.ground) if spec.ground is not None else "bare"
    sky = color_name(spec.sky[0])
    head = f"An open outdoor scene with {ground} ground under a {sky} sky."
    objs = f"Nearby stand {_join([object_words(o) for o in spec.objects])}."
    kinds = sorted({o.name for o in spec.landmarks})
    far = (
        f"In the distance there are {_join([k + 's' for k in kinds])} all around." if kinds else ""
    )
    return " ".join(s for s in (head, objs, far) if s)
