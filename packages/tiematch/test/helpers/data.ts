import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serializeKeypoints, syntheticPair, type Keypoints } from '../../src/index.js';

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'tiematch-test-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writePair(dir: string, n1: number, n2: number, seed: number, version: 0 | 1 = 0, bigEndian = false): { file1: string; file2: string; a: Keypoints; b: Keypoints } {
  const { a, b } = syntheticPair(n1, n2, seed);
  const file1 = join(dir, `a${seed}.dat`);
  const file2 = join(dir, `b${seed}.dat`);
  writeFileSync(file1, serializeKeypoints(a, version, bigEndian));
  writeFileSync(file2, serializeKeypoints(b, version, bigEndian));
  return { file1, file2, a, b };
}

/**
 * A MICMAC project: Pastis/LBPp<view>.dat for views of one synthetic scene (each sees about 60% of
 * its points, shifted, descriptors perturbed), and, with `disjoint`, views of a second scene.
 */
export function writeProject(dir: string, views: number, points: number, seed: number, disjoint = 0): string[] {
  const names: string[] = [];
  mkdirSync(join(dir, 'Pastis'), { recursive: true });
  const scenes = [syntheticPair(points, 1, seed).a, syntheticPair(points, 1, seed + 1000).a];
  let s = seed >>> 0 || 1;
  const rand = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  for (let v = 0; v < views + disjoint; v++) {
    const scene = scenes[v < views ? 0 : 1];
    const keep = Array.from(scene.x.keys()).filter(() => rand() < 0.6);
    const n = keep.length;
    const k: Keypoints = { count: n, x: new Float64Array(n), y: new Float64Array(n), scale: new Float64Array(n), angle: new Float64Array(n), type: new Int16Array(n), descriptors: new Uint8Array(n * 128) };
    keep.forEach((i, r) => {
      k.x[r] = scene.x[i] + 13.5 * v;
      k.y[r] = scene.y[i] - 7.25 * v;
      k.scale[r] = scene.scale[i];
      k.angle[r] = scene.angle[i];
      for (let d = 0; d < 128; d++) k.descriptors[r * 128 + d] = Math.max(0, Math.min(255, scene.descriptors[i * 128 + d] + Math.round((rand() - 0.5) * 6)));
    });
    const name = `IMG_${String(v).padStart(3, '0')}.JPG`;
    writeFileSync(join(dir, 'Pastis', `LBPp${name}.dat`), serializeKeypoints(k, 0));
    names.push(name);
  }
  return names;
}
