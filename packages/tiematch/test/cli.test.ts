import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { annMatch, parseResult, serializeKeypoints, syntheticPair } from '../src/index.js';
import { tempDir, writePair } from './helpers/data.js';

const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('tiematch ann', () => {
  it('MICMAC\'s call: text .result of the filtered matches, same as the library', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const { file1, file2, a, b } = writePair(dir, 3000, 2500, 21);
      const out = join(dir, 'out.result');
      const r = run('ann', file1, file2, out, '-ratio', '0.6', '--threads', '2');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /=> \d+ matches/);
      const want = await annMatch(
        { ...a, x: a.x.map(Math.fround), y: a.y.map(Math.fround) },
        { ...b, x: b.x.map(Math.fround), y: b.y.map(Math.fround) },
        { ratio: 0.6 },
      );
      assert.ok(want.index1.length > 100);
      const got = parseResult(readFileSync(out));
      assert.equal(got.length, want.coordinates.length);
      for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - want.coordinates[i]) <= 1e-2, `coordinate ${i}`);
    } finally {
      cleanup();
    }
  });

  it('-newFormat, v1 big-endian inputs, --json and --verify', () => {
    const { dir, cleanup } = tempDir();
    try {
      const { file1, file2 } = writePair(dir, 2000, 1500, 22, 1, true);
      const out = join(dir, 'out.bin');
      const r = run('ann', file1, file2, out, '-newFormat', '--json', '--verify', '--verify-sample', '50', '--mode', 'approx');
      assert.equal(r.status, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.format1, 'v1 big-endian');
      assert.equal(s.verify.sampleMismatches, 0);
      assert.ok(s.verify.recall >= 0.999, `recall ${s.verify.recall}`);
      const bytes = readFileSync(out);
      assert.equal(bytes[0], 0xba);
      assert.equal(parseResult(bytes).length, s.matches * 4);
    } finally {
      cleanup();
    }
  });

  it('bad input: a clear error with its code, nothing written', () => {
    const { dir, cleanup } = tempDir();
    try {
      const { file1, file2 } = writePair(dir, 300, 200, 23);
      const truncated = join(dir, 'cut.dat');
      writeFileSync(truncated, readFileSync(file1).subarray(0, 1000));
      const out = join(dir, 'never.result');
      let r = run('ann', truncated, file2, out);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /truncated.*\[ERR_TRUNCATED\]/);
      r = run('ann', join(dir, 'missing.dat'), file2, out);
      assert.match(r.stderr, /\[ERR_INPUT\]/);
      const empty = join(dir, 'empty.dat');
      writeFileSync(empty, serializeKeypoints(syntheticPair(1, 1, 1).a, 0).subarray(0, 8).fill(0, 0, 4));
      r = run('ann', empty, file2, out);
      assert.match(r.stderr, /N = 0.*\[ERR_EMPTY\]/);
      r = run('ann', file1, file2, join(dir, 'no', 'such', 'dir', 'x.result'));
      assert.equal(r.status, 1);
      assert.match(r.stderr, /cannot write.*\[ERR_OUTPUT\]/);
      r = run('ann', file1, file2, out, '--mode', 'fast');
      assert.match(r.stderr, /\[ERR_INVALID_ARG\]/);
      assert.throws(() => readFileSync(out));
    } finally {
      cleanup();
    }
  });
});
