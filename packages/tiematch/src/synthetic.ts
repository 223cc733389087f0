// A synthetic keypoint pair with planted matches, for tests and when no real pair is at hand:
// image 2 sees part of image 1's points shifted, with slightly perturbed descriptors.
import { DESCRIPTOR_SIZE, type Keypoints } from './format/dat.js';

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

function empty(n: number): Keypoints {
  return { count: n, x: new Float64Array(n), y: new Float64Array(n), scale: new Float64Array(n), angle: new Float64Array(n), type: new Int16Array(n), descriptors: new Uint8Array(n * DESCRIPTOR_SIZE) };
}

export function syntheticPair(n1: number, n2: number, seed = 1, matchedFraction = 0.3): { a: Keypoints; b: Keypoints; planted: number } {
  const rand = rng(seed);
  const a = empty(n1);
  const b = empty(n2);
  const D = DESCRIPTOR_SIZE;
  // SIFT-like: mostly small values, a few large, and structure (points near one of a few
  // prototypes), which is what lets a principal-component screen work on real data.
  const prototypes = Array.from({ length: 24 }, () => Array.from({ length: D }, () => Math.min(180, Math.floor(-Math.log(1 - rand() * 0.999) * 30))));
  const descriptor = (out: Uint8Array, at: number): void => {
    const p = prototypes[Math.floor(rand() * prototypes.length)];
    for (let d = 0; d < D; d++) out[at + d] = Math.max(0, Math.min(213, p[d] + Math.floor((rand() - 0.5) * 50)));
  };
  for (let i = 0; i < n1; i++) {
    a.x[i] = Math.fround(rand() * 1900 + 10);
    a.y[i] = Math.fround(rand() * 1600 + 10);
    a.scale[i] = Math.fround(1 + rand() * 8);
    a.angle[i] = Math.fround(rand() * 6.28);
    descriptor(a.descriptors, i * D);
  }
  let planted = 0;
  for (let i = 0; i < n2; i++) {
    if (rand() < matchedFraction) {
      const j = Math.floor(rand() * n1);
      b.x[i] = Math.fround(a.x[j] + 15.25 + rand() * 0.5);
      b.y[i] = Math.fround(a.y[j] - 7.5 + rand() * 0.5);
      for (let d = 0; d < D; d++) {
        const v = a.descriptors[j * D + d] + Math.round((rand() - 0.5) * 6);
        b.descriptors[i * D + d] = Math.max(0, Math.min(255, v));
      }
      planted++;
    } else {
      b.x[i] = Math.fround(rand() * 1900 + 10);
      b.y[i] = Math.fround(rand() * 1600 + 10);
      descriptor(b.descriptors, i * D);
    }
    b.scale[i] = Math.fround(1 + rand() * 8);
    b.angle[i] = Math.fround(rand() * 6.28);
  }
  return { a, b, planted };
}
