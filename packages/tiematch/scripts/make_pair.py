#!/usr/bin/env python3
"""Writes a pair of MICMAC v0 keypoint files (.dat) from two photographs, with OpenCV's SIFT.

OpenCV stores SIFT descriptors as saturate(512 d) in bytes: the scale of MICMAC's siftpp_tgi files.
Usage: make_pair.py IMAGE1 IMAGE2 OUT1.dat OUT2.dat [--upscale F] [--contrast T] [--features N[,M]]
"""
import argparse
import math
import struct
import sys

import cv2
import numpy as np


def load(path, upscale):
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        sys.exit(f"make_pair: cannot read {path}")
    if upscale != 1:
        image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    return image


def sift(image, contrast, features, what):
    detector = cv2.SIFT_create(nfeatures=features, contrastThreshold=contrast)
    points, descriptors = detector.detectAndCompute(image, None)
    if descriptors is None or len(points) == 0:
        sys.exit(f"make_pair: no SIFT points in {what}")
    return points, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)


def keypoints(path, upscale, contrast, features):
    return sift(load(path, upscale), contrast, features, path)


def write_v0(path, points, descriptors):
    with open(path, "wb") as out:
        out.write(struct.pack("<II", len(points), 128))
        for p, d in zip(points, descriptors):
            # siftpp: scale is the Gaussian sigma (OpenCV's size is a diameter), angle in radians.
            out.write(struct.pack("<ffff", p.pt[0], p.pt[1], p.size / 2, math.radians(p.angle)))
            out.write(d.tobytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image1")
    parser.add_argument("image2")
    parser.add_argument("out1")
    parser.add_argument("out2")
    parser.add_argument("--upscale", type=float, default=1.0)
    parser.add_argument("--contrast", type=float, default=0.04)
    parser.add_argument("--features", default="0", help="keep the N strongest (0: all); N,M for each image")
    args = parser.parse_args()
    features = [int(f) for f in args.features.split(",")]
    features = features * 2 if len(features) == 1 else features
    for image, out, n in ((args.image1, args.out1, features[0]), (args.image2, args.out2, features[1])):
        points, descriptors = keypoints(image, args.upscale, args.contrast, n)
        write_v0(out, points, descriptors)
        print(f"{out}: {len(points)} points from {image}")


if __name__ == "__main__":
    main()
