"""The detector's first pass: where a line of text may be, in a few milliseconds.

Thin ridges, bright or dark (a pixel brighter, or darker, than both its neighbours a
pixel or two away across it), at full, half and quarter size, counted in blocks: a block
where several rows (or columns) each cross several strokes may hold a line of text in
any orientation. Tuned to miss nothing; what it keeps, DBNet looks at
(:mod:`deid_node.pixels.detect`).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from deid_node.pixels.ocr import Box

BLOCK: Final = 16  # first pass: ridges are counted in blocks of this side (frame pixels)
RIDGE_CONTRAST: Final = 16  # 8-bit grey levels a stroke stands out of its surround
COARSE_CONTRAST: Final = 32  # the same for wide strokes, on the frame halved or quartered
CROSSINGS: Final = 4  # strokes a row of text crosses in two blocks at least (6 px letters: 6)
BUSY_LINES: Final = 3  # such rows in a block: a line of text (6 px high letters have 4+)
MARGIN: Final = 24  # frame pixels of context around the candidate blocks given to DBNet
WHOLE_FRAME: Final = 0.5  # candidate share of the frame above which all of it is looked at
SPECKLED: Final = 0.5  # share of a block's pixels on ridges above which it is speckle
FAINT_CONTRAST: Final = 6  # 8-bit levels of a faint stroke (dim grey on dark, on a flat area)
FAINT_SPECKLED: Final = 0.2  # share of a block on faint ridges: an image's fine texture


def ridges(grey: np.ndarray, contrast: int = RIDGE_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """Pixels on a thin stroke, bright or dark: brighter (or darker) than both pixels one
    or two away on either side by `contrast` or more. Two masks: across columns (the
    strokes of upright text's letters), across rows (the same, text turned a quarter).

    One-pixel strokes and strokes up to three wide alike; a step (the edge of a body, a
    bar) is brighter than one side only and is not a ridge.
    """
    across_columns, across_rows = ridge_strength(grey)
    return across_columns >= contrast, across_rows >= contrast


def ridge_strength(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """By how much each pixel stands out of both its neighbours one or two away, across
    columns and across rows (see :func:`ridges`; thresholds of this at any contrast)."""
    g = grey.astype(np.int16)
    rows, columns = g.shape
    across_columns = np.zeros(g.shape, dtype=np.int16)
    across_rows = np.zeros(g.shape, dtype=np.int16)
    for d in (1, 2):
        if columns > 4:
            core = g[:, 2:-2]
            before, after = g[:, 2 - d : -2 - d], g[:, 2 + d : columns - 2 + d]
            out = across_columns[:, 2:-2]
            np.maximum(out, core - np.maximum(before, after), out=out)
            np.maximum(out, np.minimum(before, after) - core, out=out)
        if rows > 4:
            core = g[2:-2]
            before, after = g[2 - d : -2 - d], g[2 + d : rows - 2 + d]
            out = across_rows[2:-2]
            np.maximum(out, core - np.maximum(before, after), out=out)
            np.maximum(out, np.minimum(before, after) - core, out=out)
    return across_columns, across_rows


def _crossings(across: np.ndarray, h: int, w: int, axis: int) -> np.ndarray:
    """For each block of the h x w grid, how many of its lines (rows for axis 1, columns
    for axis 0) cross at least CROSSINGS strokes within two blocks from it: `across` is
    a ridge mask across that axis."""
    starts = across & ~np.roll(across, 1, axis=axis)  # the first pixel of each stroke
    if axis == 1:
        padded = np.zeros((h * BLOCK, (w + 1) * BLOCK), dtype=np.uint8)
        padded[: starts.shape[0], : starts.shape[1]] = starts
        per_line = padded.reshape(h * BLOCK, w + 1, BLOCK).sum(axis=2, dtype=np.uint8)
        pair = per_line[:, :-1] + per_line[:, 1:]  # a block and the one right of it
        return np.asarray((pair >= CROSSINGS).reshape(h, BLOCK, w).sum(axis=1))
    padded = np.zeros(((h + 1) * BLOCK, w * BLOCK), dtype=np.uint8)
    padded[: starts.shape[0], : starts.shape[1]] = starts
    per_line = padded.reshape(h + 1, BLOCK, w * BLOCK).sum(axis=1, dtype=np.uint8)
    pair = per_line[:-1] + per_line[1:]  # a block and the one below it
    return np.asarray((pair >= CROSSINGS).reshape(h, w, BLOCK).sum(axis=2))


def candidate_blocks(
    grey: np.ndarray, strength: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """The first pass: a boolean grid, one cell per BLOCK x BLOCK block of the frame, set
    where a line of text may be: several rows (or columns) that each cross several thin
    strokes within two blocks. A letter is a stroke or two across; a vessel, a bone's
    edge or an outline is one, wherever it runs; texture and speckle are many (and pass).
    `strength`: the grey image's ridge_strength, when already computed.
    """
    rows, columns = grey.shape
    h, w = -(-rows // BLOCK), -(-columns // BLOCK)
    by_columns, by_rows = strength if strength is not None else ridge_strength(grey)
    across_columns, across_rows = by_columns >= RIDGE_CONTRAST, by_rows >= RIDGE_CONTRAST
    out = _busy_blocks(across_columns, across_rows, h, w)
    # Large text has strokes wider than a ridge: halved and quartered, they are thin. Only
    # strokes that were not thin already count there: a vessel, a ridge at full size, is
    # not a letter's stroke at half size; and lines faint after shrinking are left out.
    fine = across_columns | across_rows
    for factor in (2, 4):
        small = _shrunk(grey, factor)
        if min(small.shape) < 2 * BLOCK:
            break
        wide_columns, wide_rows = ridges(small, COARSE_CONTRAST)
        thin = _shrunk(fine.view(np.uint8), factor, np.maximum).astype(bool)
        sh, sw = -(-small.shape[0] // BLOCK), -(-small.shape[1] // BLOCK)
        coarse = _busy_blocks(wide_columns & ~thin, wide_rows & ~thin, sh, sw)
        grid = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:h, :w]
        out[: grid.shape[0], : grid.shape[1]] |= grid
    return out


def _shrunk(grey: np.ndarray, factor: int, how: Any = None) -> np.ndarray:
    """The 8-bit image reduced `factor` (a power of two) times: means of 2x2 pixels, or
    `how` (np.maximum) of them."""
    out = grey
    while factor > 1:
        rows, columns = out.shape[0] // 2 * 2, out.shape[1] // 2 * 2
        if how is not None:
            quads = [out[i:rows:2, j:columns:2] for i in (0, 1) for j in (0, 1)]
            out = how.reduce(quads)
        else:
            wide = out[:rows, :columns].astype(np.uint16)
            total = wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]
            out = (total >> 2).astype(np.uint8)
        factor //= 2
    return np.asarray(out)


def _busy_blocks(across_columns: np.ndarray, across_rows: np.ndarray, h: int, w: int) -> np.ndarray:
    """Blocks of an h x w grid over ridge masks (see :func:`ridges`) that hold several
    rows (or columns) each crossing several thin strokes (see :func:`candidate_blocks`)."""
    upright = _crossings(across_columns, h, w, axis=1)
    turned = _crossings(across_rows, h, w, axis=0)
    busy = (upright >= BUSY_LINES) | (turned >= BUSY_LINES)
    # The line of strokes began in a block and went on into the next: both are looked at.
    out = busy.copy()
    out[:, 1:] |= busy[:, :-1] & (upright[:, :-1] >= BUSY_LINES)
    out[1:, :] |= busy[:-1, :] & (turned[:-1, :] >= BUSY_LINES)
    return np.asarray(out)


def components(mask: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The 8-connected components of a boolean image: (top, left, bottom, right, pixels
    as flat indices), found by joining runs of set pixels row by row (union-find on runs:
    the images here have few runs, and a pure-numpy flood fill would be slower)."""
    rows, columns = mask.shape
    padded = np.zeros((rows, columns + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    r_start, c_start = np.nonzero(change == 1)
    _, c_stop = np.nonzero(change == -1)  # same order: row-major, paired
    n = r_start.size
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_row: dict[int, list[int]] = {}
    for i in range(n):
        by_row.setdefault(int(r_start[i]), []).append(i)
    for i in range(n):
        row = int(r_start[i])
        for j in by_row.get(row - 1, ()):
            # 8-connected: runs [a, b) and [c, d) touch if they overlap or meet diagonally.
            if c_start[j] <= c_stop[i] and c_start[i] <= c_stop[j]:
                a, b = root(i), root(j)
                if a != b:
                    parent[a] = b
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        idx = np.array(members)
        rr, cs, ce = r_start[idx], c_start[idx], c_stop[idx]
        flat = np.concatenate(
            [r * columns + np.arange(a, b) for r, a, b in zip(rr, cs, ce, strict=True)]
        )
        out.append((int(rr.min()), int(cs.min()), int(rr.max()) + 1, int(ce.max()), flat))
    return out


def regions(cells: np.ndarray, rows: int, columns: int) -> list[Box]:
    """Frame rectangles around groups of candidate blocks, with MARGIN of context;
    overlapping rectangles united. The whole frame if candidates cover much of it."""
    if not cells.any():
        return []
    if cells.mean() > WHOLE_FRAME:
        return [Box(0, 0, columns, rows)]
    boxes = []
    for top, left, bottom, right, _ in components(cells):
        boxes.append(
            Box(left * BLOCK, top * BLOCK, right * BLOCK, bottom * BLOCK).padded(
                MARGIN, rows, columns
            )
        )
    united: list[Box] = []
    for box in boxes:
        while (hit := next((u for u in united if u.overlaps(box)), None)) is not None:
            united.remove(hit)
            box = box.union(hit)
        united.append(box)
    return united


def speckled(grey: np.ndarray, h: int, w: int) -> np.ndarray:
    """Blocks of the h x w grid that are mostly ridges (speckle, not text on a background:
    a block of text is at most about a third strokes)."""
    across_columns, across_rows = ridges(grey)
    padded = np.zeros((h * BLOCK, w * BLOCK), dtype=np.float32)
    padded[: grey.shape[0], : grey.shape[1]] = across_columns | across_rows
    return np.asarray(padded.reshape(h, BLOCK, w, BLOCK).mean(axis=(1, 3)) > SPECKLED)


def faint_blocks(strength: tuple[np.ndarray, np.ndarray], cells: np.ndarray) -> np.ndarray:
    """Blocks where a faint line of text may be that the first pass left out: busy with
    strokes of FAINT_CONTRAST on an otherwise flat area (not the fine texture of an image,
    where faint ridges are everywhere), away from the candidate blocks (already looked at).
    `strength` is the grey image's ridge_strength, `cells` its candidate_blocks."""
    h, w = cells.shape
    by_columns, by_rows = strength
    across_columns, across_rows = by_columns >= FAINT_CONTRAST, by_rows >= FAINT_CONTRAST
    busy = _busy_blocks(across_columns, across_rows, h, w)
    if not busy.any():
        return busy
    padded = np.zeros((h * BLOCK, w * BLOCK), dtype=np.float32)
    padded[: by_columns.shape[0], : by_columns.shape[1]] = across_columns | across_rows
    textured = padded.reshape(h, BLOCK, w, BLOCK).mean(axis=(1, 3)) > FAINT_SPECKLED
    near = cells.copy()
    near[1:] |= cells[:-1]
    near[:-1] |= cells[1:]
    near[:, 1:] |= near[:, :-1].copy()
    near[:, :-1] |= near[:, 1:].copy()
    return np.asarray(busy & ~textured & ~near)


def may_be_turned(grey: np.ndarray) -> bool:
    """Whether a region may hold a line turned a quarter: some block where several
    columns each cross several thin strokes (an upright line's letters are crossed so by
    rows; its columns cross two or three strokes, a letter's bars)."""
    rows, columns = grey.shape
    if min(rows, columns) < BLOCK:
        return True
    h, w = -(-rows // BLOCK), -(-columns // BLOCK)
    _, across_rows = ridges(grey)
    if bool((_crossings(across_rows, h, w, axis=0) >= BUSY_LINES).any()):
        return True
    # Wide strokes of large turned text are thin at half size.
    small = _shrunk(grey, 2)
    if min(small.shape) < BLOCK:
        return False
    sh, sw = -(-small.shape[0] // BLOCK), -(-small.shape[1] // BLOCK)
    _, wide_rows = ridges(small, COARSE_CONTRAST)
    return bool((_crossings(wide_rows, sh, sw, axis=0) >= BUSY_LINES).any())
