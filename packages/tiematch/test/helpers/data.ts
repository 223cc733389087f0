import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
