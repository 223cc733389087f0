import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { JOB_FIELD_BYTES, JOB_OFFSETS, JOB_SIZE } from '../src/engine/job.js';
import { buildIndex, CLUSTER_SIZE, prepareQueries } from '../src/engine/layout.js';
import { tempDir } from './helpers/data.js';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const kernelC = join(pkg, 'wasm', 'kernel.c');

/** The Job struct's field names, in order, as kernel.c declares them. */
function cFields(): string[] {
  const src = readFileSync(kernelC, 'utf8');
  const body = /typedef struct \{([^}]*)\} Job;/.exec(src)?.[1];
  assert.ok(body, 'kernel.c declares Job');
  return body
    .split('\n')
    .map((l) => l.replace(/\/\/.*/, '').trim())
    .filter(Boolean)
    .flatMap((decl) => decl.replace(/;$/, '').split(',').map((part) => /(\w+)\s*$/.exec(part)![1]));
}

describe('the Job layout', () => {
  it('JOB_OFFSETS names every field of kernel.c\'s Job, in order, without overlaps', () => {
    assert.deepEqual(Object.keys(JOB_OFFSETS), cFields());
    let end = 0;
    for (const [name, { offset, type }] of Object.entries(JOB_OFFSETS)) {
      assert.ok(offset >= end && offset % JOB_FIELD_BYTES[type] === 0, `${name} at ${offset}`);
      end = offset + JOB_FIELD_BYTES[type];
    }
    assert.ok(end <= JOB_SIZE);
  });

  it('a table that disagrees with the struct does not compile', () => {
    const { dir, cleanup } = tempDir();
    try {
      const compile = (header: string) => {
        writeFileSync(join(dir, 'job_layout.h'), header);
        return spawnSync('clang-14', ['--target=wasm32', '-msimd128', '-nostdlib', '-fsyntax-only', '-I', dir, kernelC], { encoding: 'utf8' });
      };
      const good = readFileSync(join(pkg, 'build', 'job_layout.h'), 'utf8');
      assert.equal(compile(good).status, 0, 'the generated header compiles');
      const bad = good.replace('offsetof(Job, slack2) == 104', 'offsetof(Job, slack2) == 108');
      assert.notEqual(bad, good);
      const r = compile(bad);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /Job\.slack2/);
    } finally {
      cleanup();
    }
  });
});

describe('the index layout', () => {
  it('an index of 200,000 points, K = 8 and K = 32, fits the kernel memory it asks for', () => {
    // A short estimate of the kernel memory shows past about 100,000 points.
    const n = 200_000;
    const descriptors = new Uint8Array(n * 128);
    let s = 12345;
    for (let i = 0; i < descriptors.length; i++) descriptors[i] = ((s = (s * 1103515245 + 12345) >>> 0) >>> 24) & 0x7f;
    for (const k of [8, 32]) {
      const index = buildIndex(descriptors, k, 1);
      // Past FLAT_CLUSTERS, two levels: clusters of about CLUSTER_SIZE points in super-clusters.
      assert.ok(index.supers && index.supers.count >= Math.ceil(n / CLUSTER_SIZE / 64), 'two levels');
      assert.ok(index.nClusters >= Math.round(n / CLUSTER_SIZE) && index.nClusters % 4 === 0, `${index.nClusters} clusters`);
      assert.equal(index.supers.start[index.supers.count], index.nClusters);
      assert.ok(index.slots >= n && index.slots < n + 8 * index.nClusters);
      assert.equal(prepareQueries(index, descriptors.subarray(0, 50_000 * 128)).n, 50_000);
    }
  });
});

describe('module structure', () => {
  it('src/ has no import cycle', () => {
    const src = join(pkg, 'src');
    const files = (function walk(d: string): string[] {
      return readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.ts') ? [join(d, e.name)] : []));
    })(src);
    const edges = new Map<string, string[]>();
    for (const f of files) {
      const deps = [...readFileSync(f, 'utf8').matchAll(/^(?:import|export)\s[^;]*?from\s+'(\.[^']+)\.js'/gms)].map((m) => resolve(dirname(f), `${m[1]}.ts`));
      edges.set(f, deps);
    }
    const state = new Map<string, 'open' | 'done'>();
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return;
      assert.notEqual(state.get(f), 'open', `import cycle: ${[...path, f].map((p) => relative(src, p)).join(' -> ')}`);
      state.set(f, 'open');
      for (const d of edges.get(f) ?? []) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    assert.ok(edges.size > 10);
  });
});
