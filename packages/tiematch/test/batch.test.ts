import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { keypointPath, resultPath, type Pair } from '../src/batch/pairs.js';
import { readKeypointFile } from '../src/files.js';
import { serializeKeypoints, type Keypoints } from '../src/index.js';
import { tempDir, writeProject } from './helpers/data.js';

const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

function batch(dir: string, ...args: string[]): { status: number | null; summary: any; stderr: string } {
  const r = run('batch', dir, '--json', ...args);
  return { status: r.status, summary: r.stdout ? JSON.parse(r.stdout) : undefined, stderr: r.stderr };
}

/** `tiematch ann` on each pair into a scratch folder; asserts the batch's .result has the same bytes. */
function sameAsAnn(dir: string, pairs: Pair[], ...args: string[]): void {
  for (const [i, p] of pairs.entries()) {
    const want = join(dir, `ann-${i}.result`);
    const r = run('ann', keypointPath(dir, p.a), keypointPath(dir, p.b), want, '--threads', '2', ...args);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(resultPath(dir, p)).equals(readFileSync(want)), `${p.a} -> ${p.b}: batch and ann differ`);
    rmSync(want);
  }
}

/** Every .result under Pastis/, as "A B" pairs. */
function written(dir: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(join(dir, 'Pastis'))) {
    if (!d.startsWith('LBPp-Match-LBPp')) continue;
    for (const f of readdirSync(join(dir, 'Pastis', d))) out.push(`${d.slice('LBPp-Match-LBPp'.length)} ${f.slice(4, -'.result'.length)}`);
  }
  return out.sort();
}

describe('tiematch batch', () => {
  it('All: every ordered pair, each .result byte-identical to tiematch ann; each image read and indexed once; resumable', () => {
    const { dir, cleanup } = tempDir();
    try {
      const images = writeProject(dir, 4, 2500, 5);
      const r = batch(dir, '--pairs', 'All', '--threads', '2');
      assert.equal(r.status, 0, r.stderr);
      const s = r.summary;
      assert.deepEqual(s.pairs, { selected: 12, matched: 12, skipped: 0, failed: 0 });
      assert.equal(s.reads, 4);
      assert.equal(s.index_builds, 4);
      assert.ok(s.matches > 12 * 300, `${s.matches} matches`);
      for (const stage of ['read', 'index', 'search', 'filter', 'write', 'wall']) assert.ok(s.time_ms[stage] >= 0, stage);
      const pairs = images.flatMap((a) => images.filter((b) => b !== a).map((b) => ({ a, b })));
      assert.deepEqual(written(dir), pairs.map((p) => `${p.a} ${p.b}`).sort());
      sameAsAnn(dir, pairs);

      // Resumable: complete results are skipped; a missing one and a cut one are redone.
      const again = batch(dir, '--threads', '2');
      assert.deepEqual(again.summary.pairs, { selected: 12, matched: 0, skipped: 12, failed: 0 });
      rmSync(resultPath(dir, pairs[0]));
      writeFileSync(resultPath(dir, pairs[5]), '1 2 3\n');
      const redo = batch(dir, '--threads', '1');
      assert.deepEqual(redo.summary.pairs, { selected: 12, matched: 2, skipped: 10, failed: 0 });
      sameAsAnn(dir, [pairs[0], pairs[5]]);
      assert.ok(!readdirSync(join(dir, 'Pastis'), { recursive: true }).some((f) => String(f).includes('.tmp-')), 'no temporary file left');
    } finally {
      cleanup();
    }
  });

  it('approx mode, -newFormat, Line:1 and a tight --memory: still the per-pair bytes', () => {
    const { dir, cleanup } = tempDir();
    try {
      const images = writeProject(dir, 5, 4000, 6);
      const r = batch(dir, '--pairs', 'Line:1', '--mode', 'approx', '-newFormat', '--memory', '1M', '--threads', '2');
      assert.equal(r.status, 0, r.stderr);
      const pairs = images.flatMap((a, i) => images.filter((_, j) => Math.abs(i - j) === 1).map((b) => ({ a, b })));
      assert.equal(r.summary.pairs.matched, 8);
      assert.deepEqual(written(dir), pairs.map((p) => `${p.a} ${p.b}`).sort());
      // Half of 1 MiB holds one image: each is read again when it comes back.
      assert.ok(r.summary.reads > 5, `${r.summary.reads} reads`);
      sameAsAnn(dir, pairs, '--mode', 'approx', '-newFormat');
      assert.equal(readFileSync(resultPath(dir, pairs[0]))[0], 0xba);
    } finally {
      cleanup();
    }
  });

  it('ties: duplicated points and descriptors give the per-pair bytes, exact and approx', () => {
    const { dir, cleanup } = tempDir();
    try {
      const images = writeProject(dir, 3, 2500, 10);
      // Each view repeats some of its own points (exact ties for the nearest), and the second view
      // takes some descriptors of the first (ties across the pair).
      const withTies = (i: number, from?: Keypoints): void => {
        const path = keypointPath(dir, images[i]);
        const k = readKeypointFile(path).points;
        for (let r = 0; r < 200; r++) {
          const to = (r * 37 + 11) % k.count, src = (r * 53 + 5) % k.count;
          k.descriptors.copyWithin(to * 128, src * 128, src * 128 + 128);
          if (from && r % 2) k.descriptors.set(from.descriptors.subarray(src * 128, src * 128 + 128), ((r * 41 + 7) % k.count) * 128);
        }
        writeFileSync(path, serializeKeypoints(k, 0));
      };
      withTies(0);
      withTies(1, readKeypointFile(keypointPath(dir, images[0])).points);
      const pairs = images.flatMap((a) => images.filter((b) => b !== a).map((b) => ({ a, b })));
      for (const mode of ['exact', 'approx']) {
        const r = batch(dir, '--mode', mode, '--force', '--threads', '2');
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.summary.pairs.matched, 6);
        sameAsAnn(dir, pairs, '--mode', mode);
      }
    } finally {
      cleanup();
    }
  });

  it('File: MICMAC\'s pair list; MulScale:K keeps the pairs its first pass finds', () => {
    const { dir, cleanup } = tempDir();
    try {
      const images = writeProject(dir, 3, 2000, 7, 2);
      const xml = join(dir, 'pairs.xml');
      writeFileSync(xml, `<?xml version="1.0" ?>\n<SauvegardeNamedRel>\n  <!-- <Cple>x y</Cple> -->\n  <Cple>${images[0]} ${images[2]}</Cple>\n  <Cple>${images[2]} ${images[0]}</Cple>\n  <Cple>${images[1]} ${images[3]}</Cple>\n</SauvegardeNamedRel>\n`);
      let r = batch(dir, '--pairs', `File:${xml}`);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(written(dir), [`${images[0]} ${images[2]}`, `${images[1]} ${images[3]}`, `${images[2]} ${images[0]}`]);
      rmSync(join(dir, 'Pastis'), { recursive: true, force: true });

      writeProject(dir, 3, 2000, 7, 2);
      r = batch(dir, '--pairs', 'MulScale:20', '--mulscale-points', '600');
      assert.equal(r.status, 0, r.stderr);
      // Views 0-2 see one scene, 3-4 another: only pairs within a scene pass the first pass.
      const scene = (i: number): number => (i < 3 ? 0 : 1);
      const want = images.flatMap((a, i) => images.filter((_, j) => j !== i && scene(j) === scene(i)).map((b) => ({ a, b })));
      assert.deepEqual(r.summary.mulscale, { first_pass_pairs: 20, points: 600, kept: want.length });
      assert.deepEqual(written(dir), want.map((p) => `${p.a} ${p.b}`).sort());
      sameAsAnn(dir, want.slice(0, 3));
    } finally {
      cleanup();
    }
  });

  it('bad input: errors name the file and carry a code, the other pairs go on, exit status 1', () => {
    const { dir, cleanup } = tempDir();
    try {
      const images = writeProject(dir, 4, 800, 8);
      const cut = keypointPath(dir, images[1]);
      writeFileSync(cut, readFileSync(cut).subarray(0, 500));
      // An output folder that cannot be made: a file stands where it goes.
      writeFileSync(join(dir, 'Pastis', `LBPp-Match-LBPp${images[3]}`), 'in the way');
      const xml = join(dir, 'pairs.xml');
      writeFileSync(xml, `<SauvegardeNamedRel><Cple>${images[0]} ${images[2]}</Cple><Cple>${images[0]} ${images[1]}</Cple><Cple>${images[0]} GHOST.JPG</Cple><Cple>${images[3]} ${images[0]}</Cple></SauvegardeNamedRel>`);
      const r = batch(dir, '--pairs', `File:${xml}`);
      assert.equal(r.status, 1);
      assert.equal(r.summary.pairs.matched, 1);
      assert.ok(existsSync(resultPath(dir, { a: images[0], b: images[2] })));
      const codes = Object.fromEntries(r.summary.errors.map((e: any) => [e.b, e]));
      assert.equal(codes[images[1]].code, 'ERR_TRUNCATED');
      assert.ok(codes[images[1]].message.includes(cut));
      assert.equal(codes['GHOST.JPG'].code, 'ERR_NO_KEYPOINTS');
      assert.ok(codes['GHOST.JPG'].message.includes(keypointPath(dir, 'GHOST.JPG')));
      assert.equal(codes[images[0]].code, 'ERR_OUTPUT');
      assert.match(r.stderr, /GHOST\.JPG.*\[ERR_NO_KEYPOINTS\]/);

      // On a TTY (script(1) gives it one), a bar of the pairs done.
      const tty = spawnSync('script', ['-qec', `${process.execPath} ${cli} batch ${dir} --pairs Line:1 --force`, '/dev/null'], { encoding: 'utf8' });
      assert.match(tty.stdout, /\r\[#+\] \d+\/\d+ pairs, \d+ matches/);
      assert.match(run('batch', dir, '--pairs', 'Sometimes').stderr, /\[ERR_INVALID_ARG\]/);
      assert.match(run('batch', dir, '--pairs', `File:${join(dir, 'none.xml')}`).stderr, /none\.xml.*\[ERR_PAIR_LIST\]/);
      assert.match(run('batch', join(dir, 'nowhere')).stderr, /Pastis.*\[ERR_INPUT\]/);
    } finally {
      cleanup();
    }
  });

  it('--shard I/N: disjoint shards whose union is the whole run, each image indexed in one shard', () => {
    const { dir, cleanup } = tempDir();
    try {
      writeProject(dir, 5, 800, 9);
      const whole = batch(dir, '--threads', '1');
      const all = written(dir);
      const bytes = new Map(all.map((p) => [p, readFileSync(resultPath(dir, { a: p.split(' ')[0], b: p.split(' ')[1] }))]));
      rmSync(join(dir, 'Pastis'), { recursive: true });
      writeProject(dir, 5, 800, 9);
      const seen: string[] = [];
      let builds = 0;
      for (let i = 1; i <= 3; i++) {
        const before = new Set(written(dir));
        const r = batch(dir, '--shard', `${i}/3`, '--threads', '1');
        assert.equal(r.status, 0, r.stderr);
        builds += r.summary.index_builds;
        const mine = written(dir).filter((p) => !before.has(p));
        assert.equal(mine.length, r.summary.pairs.matched);
        seen.push(...mine);
      }
      assert.deepEqual(seen.sort(), all);
      assert.equal(builds, whole.summary.index_builds);
      for (const p of all) assert.ok(readFileSync(resultPath(dir, { a: p.split(' ')[0], b: p.split(' ')[1] })).equals(bytes.get(p)!), p);
    } finally {
      cleanup();
    }
  });
});
