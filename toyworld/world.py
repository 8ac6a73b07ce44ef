"""ToyWorld vocabulary and scene description.

A scene is a plain background with 1-3 objects placed in a 2x2 grid of 16 px cells on a
32x32 RGB canvas (the "grid world" that a CPU prototype found learnable; see
shared/reference/toyworld_prototype.md). Objects vary in shape, colour, texture, size,
sub-cell jitter and colour jitter, and the background varies in grey level and tint, so
that Frechet distances and diversity have something to measure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

RESOLUTION = 32
GRID = 2
CELL = RESOLUTION // GRID

SHAPES = ("circle", "square", "triangle")
# Saturated palette, far apart in RGB so the oracle can name a colour under noise.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (170, 60, 210),
}
TEXTURES = ("solid", "striped")
# Stripes are the colour pulled halfway to mid-grey: always far from the dark background.
STRIPE_MIX = 0.5
STRIPE_GREY = 128
STRIPE_PERIOD = 4  # pixels at 32 px: 2 px colour, 2 px stripe tone

MIN_SIZE, MAX_SIZE = 10, 12
MAX_JITTER = 1  # pixels, per axis; objects never leave their cell
BACKGROUND_RANGE = (12, 48)  # grey level of the plain background
BACKGROUND_TINT = 6
COLOR_JITTER = 12

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
# GenEval relation names; (row, col) offsets of the object relative to the reference.
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}


def stripe_tone(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(round((1 - STRIPE_MIX) * c + STRIPE_MIX * STRIPE_GREY)) for c in rgb)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    texture: str
    cell: tuple[int, int]  # (row, col) in the 2x2 grid
    size: int = 12  # pixels (bounding box side)
    offset: tuple[int, int] = (0, 0)  # (dy, dx) jitter in pixels
    rgb_jitter: tuple[int, int, int] = (0, 0, 0)

    def box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in pixels, x2/y2 exclusive."""
        r, c = self.cell
        cy = r * CELL + CELL // 2 + self.offset[0]
        cx = c * CELL + CELL // 2 + self.offset[1]
        h = self.size // 2
        return (cx - h, cy - h, cx - h + self.size, cy - h + self.size)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int] = (30, 30, 30)

    def to_dict(self) -> dict:
        return {"background": list(self.background), "objects": [asdict(o) for o in self.objects]}


@dataclass
class Requirement:
    """One GenEval-style `include` entry: `count` objects of `shape`, optionally with a colour,
    texture, and a position relative to the objects of include entry `position[1]`."""

    shape: str
    count: int = 1
    color: str | None = None
    texture: str | None = None
    position: tuple[str, int] | None = None

    def to_geneval(self) -> dict:
        d: dict = {"class": self.shape, "count": self.count}
        if self.color:
            d["color"] = self.color
        if self.texture:
            d["texture"] = self.texture
        if self.position:
            d["position"] = [self.position[0], self.position[1]]
        return d


@dataclass
class PromptSpec:
    """A prompt and the structured truth needed to render it and to grade an image of it.
    `tag` is a GenEval task or a CompBench-style category; `same_color` marks the non-spatial
    relation "the same colour as" between include entries 0 and 1."""

    tag: str
    prompt: str
    include: list[Requirement]
    exclude: list[Requirement] = field(default_factory=list)
    same_color: bool = False

    def to_metadata(self) -> dict:
        d = {"tag": self.tag, "prompt": self.prompt, "include": [r.to_geneval() for r in self.include]}
        if self.exclude:
            d["exclude"] = [{"class": r.shape, "count": r.count} for r in self.exclude]
        if self.same_color:
            d["same_color"] = True
        return d

    @staticmethod
    def from_metadata(d: dict) -> "PromptSpec":
        inc = [Requirement(shape=r["class"], count=int(r.get("count", 1)), color=r.get("color"),
                           texture=r.get("texture"),
                           position=tuple(r["position"]) if r.get("position") else None) for r in d["include"]]
        exc = [Requirement(shape=r["class"], count=int(r["count"])) for r in d.get("exclude", [])]
        return PromptSpec(tag=d["tag"], prompt=d["prompt"], include=inc, exclude=exc,
                          same_color=bool(d.get("same_color", False)))
