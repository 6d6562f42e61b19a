"""`python -m jax_roi demo`: the classic RoI Pool vs RoI Align example, run through both ops.

An 800x800 image, a VGG16-style stride of 32 (a 25x25 feature map) and one 665x665 box,
pooled to 7x7. The feature map's channel 0 holds each cell's column index, so every pooled
value reads directly as "which column did this bin look at".
"""

from __future__ import annotations

import math

import numpy as np

IMAGE = 800
STRIDE = 32
BOX = 665.0
POOLED = 7


def _grid(a: np.ndarray) -> str:
    return "\n".join("    " + " ".join(f"{v:6.2f}" for v in row) for row in a)


def main() -> None:
    import jax

    import jax_roi

    size = IMAGE // STRIDE
    cols = np.broadcast_to(np.arange(size, dtype=np.float32), (size, size))
    features = np.stack([cols, cols.T])[None]  # [1, 2, 25, 25]: channel 0 = x, channel 1 = y
    rois = np.array([[0, 0, 0, BOX, BOX]], np.float32)
    scale = 1.0 / STRIDE

    span = BOX / STRIDE
    cells = math.floor(span)
    print(f"jax_roi demo on {jax.devices()[0].platform}: {IMAGE}x{IMAGE} image, {BOX:.0f}x{BOX:.0f} "
          f"box, stride {STRIDE} -> {size}x{size} feature map, {POOLED}x{POOLED} output")
    print(f"  the box spans {BOX:.0f}/{STRIDE} = {span:.2f} feature cells")
    print(f"  RoI Pool quantizes: {span:.2f} -> {cells} cells, bins of {cells}/{POOLED} -> "
          f"{cells // POOLED} cells each (the classic Fast R-CNN loss of alignment)")
    print(f"  RoI Align keeps fractions: bins of {span:.2f}/{POOLED} = {span / POOLED:.2f} cells")

    pooled = np.asarray(jax_roi.roi_pool(features, rois, POOLED, scale))
    print("\nroi_pool (torchvision/Caffe rounding: corners round to cells 0 and "
          f"{round(span)}, +1 inclusive -> {round(span) + 1} cells, bins of "
          f"{(round(span) + 1) / POOLED:.2f}); channel 0 = max column index per bin:")
    print(_grid(pooled[0, 0]))

    for aligned in (False, True):
        out = np.asarray(jax_roi.roi_align(features, rois, POOLED, scale, sampling_ratio=2,
                                           aligned=aligned))
        shift = " (boxes shifted by -0.5 cell)" if aligned else ""
        print(f"\nroi_align aligned={aligned}{shift}, sampling_ratio=2; channel 0 = mean "
              "column sampled per bin:")
        print(_grid(out[0, 0]))
    first, second = out[0, 0, 0, :2]
    print(f"\nRoI Align bins advance by {second - first:.2f} cells ({span:.2f}/{POOLED}), "
          "RoI Pool's by whole cells.")
