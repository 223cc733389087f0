#!/usr/bin/env python3
"""Writes a MICMAC project of N views of one photograph: mild random homographies (rotation,
scale, shift, a little perspective) of it, each view's SIFT keypoints in Pastis/LBPp<view>.dat.

Usage: make_views.py IMAGE OUTDIR [--views N] [--upscale F] [--contrast T] [--features N] [--seed S]
"""
import argparse
import os

import cv2
import numpy as np

from make_pair import load, sift, write_v0


def homography(rng, w, h):
    angle = np.radians(rng.uniform(-10, 10))
    scale = rng.uniform(0.88, 1.12)
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    tx, ty = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h
    about = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    back = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    rotate = np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-1, 1) * 1e-4, rng.uniform(-1, 1) * 1e-4, 1]])
    return about @ tilt @ rotate @ back


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("out")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--upscale", type=float, default=1.0)
    parser.add_argument("--contrast", type=float, default=0.04)
    parser.add_argument("--features", type=int, default=0)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    image = load(args.image, args.upscale)
    h, w = image.shape
    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.out, "Pastis"), exist_ok=True)
    for v in range(args.views):
        H = np.eye(3) if v == 0 else homography(rng, w, h)
        view = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        name = f"view_{v:02d}.jpg"
        points, descriptors = sift(view, args.contrast, args.features, name)
        write_v0(os.path.join(args.out, "Pastis", f"LBPp{name}.dat"), points, descriptors)
        print(f"{name}: {len(points)} points")


if __name__ == "__main__":
    main()
