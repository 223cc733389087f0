// The main job, as `npm start` runs it, through the built CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { caps, need } from './helpers/caps.js';

const BUILT_CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

describe('postcopy demo', () => {
  it('migrates a live workload and verifies every page (--json)', (t) => {
    if (!need(t, caps.uffd.ok && caps.processVmReadv.ok, caps.uffd.detail)) return;
    assert.ok(existsSync(BUILT_CLI), 'npm test builds the CLI first');
    const r = spawnSync(process.execPath, [BUILT_CLI, 'demo', '--mib', '64', '--json'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    for (const k of ['pages', 'faulted', 'pushed', 'mismatches', 'downtime_ms', 'total_ms', 'fault_p50_us', 'fault_p99_us']) assert.ok(k in out, k);
    assert.equal(out.pages, (64 << 20) / 4096);
    assert.equal(out.mismatches, 0);
    assert.equal(out.self_check_failures, 0);
    assert.equal(out.faulted + out.pushed + out.zero <= out.pages, true);
    assert.ok(out.faulted > 0, 'the target faulted some pages in');
    assert.ok(out.zero > 0, 'the untouched tail came as zero pages');
    assert.ok(out.steps_on_target > 0);
  });

  it('says exactly what is missing without privileges, and nothing else', (t) => {
    if (!need(t, caps.root, 'root, to run the demo as an unprivileged user')) return;
    const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups'];
    const readable = spawnSync('setpriv', [...asNobody, 'test', '-r', BUILT_CLI]);
    if (readable.error || readable.status !== 0) return t.skip('the checkout is not readable by an unprivileged user');
    const r = spawnSync('setpriv', [...asNobody, process.execPath, BUILT_CLI, 'demo', '--mib', '8'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (r.error) return t.skip(`setpriv unavailable: ${r.error.message}`);
    assert.equal(r.status, 77, r.stderr);
    assert.match(r.stderr, /^postcopy: ERR_PRIVILEGE: userfaultfd needs .*\n$/);
    assert.equal(r.stdout, '');
  });
});
