// tiematch batch as a Slurm array on a real Slurm: Debian's slurm-wlm, installed by
// scripts/slurm-install.sh the first time, slurmctld and slurmd started on this machine by
// scripts/slurm-cluster.sh with a generated config, and stopped after the test, also on failure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resultPath } from '../src/batch/pairs.js';
import { tempDir, writeProject } from './helpers/data.js';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const cli = join(pkg, 'dist', 'cli', 'main.js');
const cluster = join(pkg, 'scripts', 'slurm-cluster.sh');
const sbatchScript = join(pkg, '..', '..', 'contrib', 'tiematch-batch.sbatch');
const isRoot = process.getuid?.() === 0;
const ci = process.env.CI === 'true';

/** Every .result of a project: name -> bytes. */
function results(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const d of readdirSync(join(dir, 'Pastis')).filter((d) => d.startsWith('LBPp-Match-'))) {
    for (const f of readdirSync(join(dir, 'Pastis', d))) out.set(`${d}/${f}`, readFileSync(join(dir, 'Pastis', d, f)));
  }
  return out;
}

describe('tiematch batch on Slurm', () => {
  // Root runs slurmd (it starts jobs as their user); under CI=true a missing feature fails the run.
  it('an array of 4 shards writes what one machine writes', { skip: !isRoot && !ci ? 'needs root to run slurmctld and slurmd' : false, timeout: 600_000 }, () => {
    assert.ok(isRoot, 'CI=true: the Slurm test needs root');
    const { dir, cleanup } = tempDir();
    const project = join(dir, 'project');
    const single = join(dir, 'single');
    const state = join(dir, 'slurm');
    writeProject(project, 5, 1200, 31);
    cpSync(project, single, { recursive: true });
    try {
      const one = spawnSync(process.execPath, [cli, 'batch', single, '--threads', '2'], { encoding: 'utf8' });
      assert.equal(one.status, 0, one.stderr);
      const want = results(single);
      assert.equal(want.size, 20);

      // Bounded: the first time includes apt-get install slurm-wlm.
      const up = spawnSync(cluster, ['start', state], { encoding: 'utf8', timeout: 400_000 });
      assert.equal(up.status, 0, `slurm-cluster start: ${up.stderr}`);
      const env = { ...process.env, SLURM_CONF: up.stdout.trim().split('\n').pop()!, TIEMATCH: `${process.execPath} ${cli}` };
      const job = spawnSync('sbatch', ['--wait', '--array=1-4', '-c', '1', '--mem=500M', '-o', join(state, 'task-%a.out'), '-e', join(state, 'task-%a.err'), sbatchScript, project, '--json'], { encoding: 'utf8', env, timeout: 180_000 });
      const logs = () => [1, 2, 3, 4].map((i) => { try { return readFileSync(join(state, `task-${i}.err`), 'utf8'); } catch { return ''; } }).join('\n');
      assert.equal(job.status, 0, `sbatch: ${job.stdout}${job.stderr}${logs()}`);

      const shards = [1, 2, 3, 4].map((i) => JSON.parse(readFileSync(join(state, `task-${i}.out`), 'utf8')));
      assert.deepEqual(shards.map((s) => s.shard), ['1/4', '2/4', '3/4', '4/4']);
      // Disjoint: the shards' pairs add up to the whole, and each image is indexed in one shard.
      assert.equal(shards.reduce((n, s) => n + s.pairs.matched, 0), 20);
      assert.equal(shards.reduce((n, s) => n + s.index_builds, 0), 5);
      const got = results(project);
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
      for (const [name, bytes] of want) assert.ok(got.get(name)!.equals(bytes), name);
      assert.ok(resultPath(project, { a: 'IMG_000.JPG', b: 'IMG_004.JPG' }).startsWith(project));
    } finally {
      spawnSync(cluster, ['stop', state], { timeout: 30_000 });
      cleanup();
    }
  });
});
