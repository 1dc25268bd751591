"""Frames with text planted the hard ways, and frames with none, for the text detector.

Each case is one 8-bit frame (grey, or RGB) and what was drawn in it, in frame pixels:
text turned 0/90/180/270 degrees (14 and 7 pixels high on speckle, 6 on a dark frame),
6-8 pixels high, dim grey text on speckle as bright
as it, text after JPEG compression, white, yellow and dark text. The text-free frames
are speckle, a photograph-like gradient with texture, and a CT slice. Deterministic.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deid_node.testing.synthetic.annotated import Drawn, annotated_ultrasound, draw_text
from deid_node.testing.synthetic.captures import us_multiframe
from deid_node.testing.synthetic.patient import SyntheticPatient
from deid_node.testing.synthetic.tokens import PhiTokens

__all__ = ["Case", "colour_doppler", "ct_slice", "text_cases", "textless_cases"]

ROWS, COLS = 480, 640


@dataclass(frozen=True)
class Case:
    """One frame, how to read it, the text drawn in it (none for a text-free frame), and
    its ink: the pixels the drawing changed by more than INK grey levels."""

    name: str
    frame: np.ndarray
    photometric: str
    drawn: tuple[Drawn, ...]
    ink: np.ndarray

    def ink_in(self, drawn: Drawn) -> np.ndarray:
        """The (row, column) of every ink pixel of one drawn text."""
        left, top, right, bottom = drawn.box
        rr, cc = np.nonzero(self.ink[top:bottom, left:right])
        return np.stack([rr + top, cc + left], axis=1)


INK = 32


def _case(
    name: str, before: np.ndarray, after: np.ndarray, photometric: str, drawn: list[Drawn]
) -> Case:
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16))
    ink = (diff.max(axis=2) if diff.ndim == 3 else diff) > INK
    return Case(name, after, photometric, tuple(drawn), ink)


def speckle(rows: int = ROWS, cols: int = COLS, seed: int = 0) -> np.ndarray:
    """Ultrasound-like speckle in a fan on black, 8-bit grey."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    fan = (np.hypot(x - cols / 2, y) < 0.95 * rows) & (np.abs(x - cols / 2) < y + 2)
    grains = rng.gamma(2.0, 40.0, size=(rows, cols)).clip(0, 255).astype(np.uint8)
    return np.where(fan, grains, 0).astype(np.uint8)


def photograph(rows: int = ROWS, cols: int = COLS, seed: int = 0) -> np.ndarray:
    """A photograph-like RGB frame: smooth colour gradients, blobs, fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    out = np.empty((rows, cols, 3), dtype=np.float32)
    for c in range(3):
        phase = rng.uniform(0, 2 * np.pi, 3)
        out[..., c] = (
            110
            + 50 * np.sin(x / (60 + 20 * c) + phase[0])
            + 40 * np.cos(y / (45 + 15 * c) + phase[1])
            + 20 * np.sin((x + y) / 23.0 + phase[2])
        )
    for _ in range(12):  # blobs: objects in the scene
        cy, cx, r = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(20, 90)
        blob = np.hypot(y - cy, x - cx) < r
        out[blob] = out[blob] * 0.6 + rng.uniform(0, 255, 3) * 0.4
    out += rng.normal(0, 6, size=out.shape)  # grain
    return np.clip(out, 0, 255).astype(np.uint8)


def ct_slice(rows: int = 512, cols: int = 512, seed: int = 0) -> np.ndarray:
    """A CT slice, stored values (HU + 1024, uint16): body, lungs with vessels, bone, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    r = np.hypot((x - cx) / (0.42 * cols), (y - cy) / (0.34 * rows))
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    hu[r < 1.0] = 40.0
    hu[(r > 0.8) & (r < 0.88)] = 700.0
    for side in (-1, 1):  # lungs, with branching vessels
        lung = np.hypot((x - cx - side * 0.2 * cols) / (0.14 * cols), (y - cy) / (0.22 * rows)) < 1
        hu[lung] = -850.0
        for _ in range(25):
            angle, length = rng.uniform(0, np.pi), rng.uniform(10, 60)
            x0 = cx + side * 0.2 * cols + rng.uniform(-40, 40)
            y0 = cy + rng.uniform(-80, 80)
            t = np.linspace(0, length, int(length) * 2)
            vx = (x0 + t * np.cos(angle)).astype(int).clip(0, cols - 1)
            vy = (y0 + t * np.sin(angle)).astype(int).clip(0, rows - 1)
            keep = lung[vy, vx]
            hu[vy[keep], vx[keep]] = -100.0
    hu += rng.normal(0.0, 12.0, size=(rows, cols)).astype(np.float32)
    stored: np.ndarray = np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)
    return stored


def _turned(
    base: np.ndarray, at: tuple[int, int], text: str, size: int, fill: object, k: int
) -> tuple[np.ndarray, Drawn]:
    """`base` with `text` drawn turned k quarters counter-clockwise, its box in frame pixels."""
    view = np.ascontiguousarray(np.rot90(base, -k))  # text drawn upright here reads turned
    out, drawn = draw_text(view, [(at, text, size, fill)])
    frame = np.ascontiguousarray(np.rot90(out, k))
    left, top, right, bottom = drawn[0].box
    for _ in range(k % 4):  # the box turned with the view: one quarter at a time
        width = view.shape[1]
        left, top, right, bottom = top, width - right, bottom, width - left
        view = np.rot90(view)
    return frame, Drawn((left, top, right, bottom), text)


def _jpeg(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    decoded: np.ndarray = np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).copy()
    return decoded


def text_cases() -> list[Case]:
    """Every planted case: name, frame, photometric, what was drawn."""
    cases: list[Case] = []
    grey = speckle()
    for k in range(4):
        frame, one = _turned(grey, (60, 40), "DOE^JANE 4711", 14, 255, k)
        cases.append(_case(f"white 14px turned {90 * k}", grey, frame, "MONOCHROME2", [one]))
        frame, one = _turned(grey, (60, 40), "DOE^JANE 4711", 9, 255, k)
        cases.append(_case(f"white 7px turned {90 * k}", grey, frame, "MONOCHROME2", [one]))
    dark = np.full((ROWS, COLS), 40, dtype=np.uint8)
    dark[100:400, 100:540] = speckle(300, 440, seed=3)
    for k in range(4):
        frame, one = _turned(dark, (16, 200), "DOE JANE 1984", 8, 255, k)
        cases.append(_case(f"6px on dark turned {90 * k}", dark, frame, "MONOCHROME2", [one]))
    for size, high in ((8, 6), (9, 7), (10, 8)):
        frame, drawn = draw_text(dark, [((12, 12), "ID 20394857 SMITH", size, 230)])
        cases.append(_case(f"small {high}px", dark, frame, "MONOCHROME2", drawn))
    frame, drawn = draw_text(grey, [((200, 300), "DIM NAME 1984", 16, 140)])
    cases.append(_case("dim grey on speckle", grey, frame, "MONOCHROME2", drawn))
    patient = SyntheticPatient.make(PhiTokens(), seed=2)
    ds, per_frame = annotated_ultrasound(patient, frames=1)
    us = np.frombuffer(ds.PixelData, np.uint8).reshape(ROWS, COLS, 3).copy()
    plain = np.frombuffer(
        us_multiframe(patient, 1, ROWS, COLS, burned_in=None).PixelData, np.uint8
    ).reshape(ROWS, COLS, 3)
    cases.append(_case("ultrasound white+yellow", plain, us, "RGB", per_frame[0]))
    jpeg = _case("ultrasound JPEG q75", plain, us, "RGB", per_frame[0])
    cases.append(Case(jpeg.name, _jpeg(us), "RGB", jpeg.drawn, jpeg.ink))
    light = np.clip(np.tile(np.linspace(170, 250, COLS), (ROWS, 1)), 0, 255).astype(np.uint8)
    frame, drawn = draw_text(light, [((30, 30), "Report: ROE, RICHARD 1957", 14, 20)])
    cases.append(_case("dark on light", light, frame, "MONOCHROME2", drawn))
    frame, drawn = draw_text(grey, [((40, 420), "MONO1 ZED 7781", 14, 255)])
    cases.append(_case("MONOCHROME1 dark text", 255 - grey, 255 - frame, "MONOCHROME1", drawn))
    flow = colour_doppler(seed=7)
    frame, drawn = draw_text(flow, [((262, 230), "SMITH 1234", 14, (255, 255, 255))])
    cases.append(_case("white on colour Doppler", flow, frame, "RGB", drawn))
    return cases


def colour_doppler(seed: int = 5) -> np.ndarray:
    """An RGB ultrasound with a colour flow box: smooth velocities, red one way and blue
    the other, over part of the fan."""
    doppler = np.stack([speckle(seed=seed)] * 3, axis=-1)
    rng = np.random.default_rng(seed + 1)
    coarse = rng.normal(0, 1, size=(8, 8)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((140, 120), Image.Resampling.BILINEAR))
    velocity = np.clip(smooth * 160, -255, 255)
    box = doppler[180:300, 250:390]
    red = np.stack([velocity.clip(0, 255), velocity.clip(0, 255) * 0.3, 0 * velocity], -1)
    blue = np.stack([0 * velocity, (-velocity).clip(0, 255) * 0.4, (-velocity).clip(0, 255)], -1)
    flowing = np.abs(velocity) > 20
    box[flowing] = np.clip(red + blue, 0, 255).astype(np.uint8)[flowing]
    return doppler


def textless_cases() -> list[Case]:
    """Frames with nothing written: speckle, a photograph, a CT slice, a colour Doppler."""
    doppler = colour_doppler()
    makers: list[tuple[str, Callable[[], np.ndarray], str]] = [
        ("speckle", lambda: speckle(seed=1), "MONOCHROME2"),
        ("photograph", lambda: photograph(seed=1), "RGB"),
        ("colour Doppler", lambda: doppler, "RGB"),
        ("CT slice 512", lambda: ct_slice(seed=1), "MONOCHROME2"),
    ]
    out = []
    for name, make, photometric in makers:
        frame = make()
        out.append(Case(name, frame, photometric, (), np.zeros(frame.shape[:2], dtype=bool)))
    return out
