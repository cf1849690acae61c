"""Picture grids (Pillow): originals beside reconstructions, labelled."""

from __future__ import annotations

import numpy as np


def to_uint8(image) -> np.ndarray:
    """H x W or H x W x 3 float image in [0, 255] (clipped) -> uint8."""
    return np.clip(np.rint(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def _spaced(text) -> str:
    """Text as drawn: Pillow's default font has a 2-pixel space, which runs words together
    ("HOGb 75.9%" reads "HOGb75.9%"), so every space is drawn doubled."""
    return str(text).replace(" ", "  ")


def grid(rows, col_labels=None, row_labels=None, captions=None, cell=None, pad=4,
         label_height=14, title=None):
    """A labelled grid of images.

    Args:
        rows: list of rows, each a list of images (H x W grey or H x W x 3, values in [0, 255];
            None leaves a blank cell).
        col_labels, row_labels: optional text above columns / left of rows.
        captions: optional text under each image, same nesting as ``rows`` (e.g. errors).
        cell: (h, w) every image is resized to (default: the first image's size).
        title: optional line above everything, in red (e.g. that the weights are untrained).

    Returns:
        a PIL.Image (RGB).
    """
    from PIL import Image, ImageDraw

    first = next(im for row in rows for im in row if im is not None)
    ch, cw = cell or np.asarray(first).shape[:2]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    left = 0
    if row_labels:
        left = 8 + 6 * max(len(_spaced(s)) for s in row_labels)
    head = label_height + pad if title else 0
    top = head + (label_height + pad if col_labels else 0)
    W = left + n_cols * (cw + pad) + pad
    H = top + n_rows * (ch + pad + label_height) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + pad, 2), _spaced(title), fill=(200, 0, 0))
    if col_labels:
        for j, text in enumerate(col_labels):
            draw.text((left + pad + j * (cw + pad), head + 2), _spaced(text), fill="black")
    for i, row in enumerate(rows):
        y = top + pad + i * (ch + pad + label_height)
        if row_labels:
            draw.text((4, y + ch // 2 - 5), _spaced(row_labels[i]), fill="black")
        for j, im in enumerate(row):
            if im is None:
                continue
            a = to_uint8(im)
            pil = Image.fromarray(a if a.ndim == 3 else np.stack([a] * 3, axis=-1))
            if pil.size != (cw, ch):
                pil = pil.resize((cw, ch), Image.BICUBIC)
            canvas.paste(pil, (left + pad + j * (cw + pad), y))
            if captions and captions[i][j]:
                draw.text((left + pad + j * (cw + pad), y + ch + 1), _spaced(captions[i][j]),
                          fill="black")
    return canvas
