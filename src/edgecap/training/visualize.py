"""Evaluation figure: per study, the frontal (or only) view with the decoder's mean attention overlaid,
and the generated report above the reference."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from edgecap.config import Config
from edgecap.runtime.preprocess import read_image, to_gray
from edgecap.runtime.text import render_report, tokenize


def attention_map(attention: np.ndarray, view: int, grid: int) -> np.ndarray:
    """(T, N) attention of a report -> (grid, grid) mean weight of one view's positions, scaled to [0, 1]."""
    p = grid * grid
    a = (
        attention[:, view * p : (view + 1) * p].mean(0).reshape(grid, grid)
        if len(attention)
        else np.zeros((grid, grid))
    )
    return a / a.max() if a.max() > 0 else a


def overlay(image_path: Path, att: np.ndarray) -> np.ndarray:
    """Gray X-ray (H, W) + (g, g) attention -> (H, W, 3) float RGB in [0, 1]."""
    gray = to_gray(read_image(image_path))
    heat = cv2.resize(att.astype(np.float32), gray.shape[::-1], interpolation=cv2.INTER_CUBIC).clip(0, 1)
    color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1] / 255.0
    return np.clip(0.6 * np.repeat(gray[:, :, None], 3, 2) + 0.4 * color, 0.0, 1.0)


def attention_grid(outputs, refs: dict[str, str], vocab, cfg: Config, path: Path, max_studies: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = outputs[:max_studies]
    fig, axes = plt.subplots(
        len(outputs), 2, figsize=(11, 3.3 * len(outputs)), squeeze=False, gridspec_kw={"width_ratios": [1, 2.2]}
    )
    for row, out in zip(axes, outputs):
        view = 0 if out.views[0] else 1
        row[0].imshow(overlay(out.views[view], attention_map(out.decoded.attention, view, cfg.grid)))
        row[0].set_title(f"study {out.uid} ({'frontal' if view == 0 else 'lateral'})", fontsize=9)
        row[0].axis("off")
        gen = textwrap.fill("GENERATED: " + render_report(tokenize(out.text)), 90)
        ref = textwrap.fill("REFERENCE: " + render_report(tokenize(refs[out.uid])), 90)
        row[1].text(0, 1, gen + "\n\n" + ref, va="top", fontsize=8, family="monospace", wrap=True)
        row[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
