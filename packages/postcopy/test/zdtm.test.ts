// CRIU's own test suite, zdtm (from Debian's source of the CRIU root's criu 4.1.1), in its
// lazy-pages modes with `postcopy lazy-pages` in the place of `criu lazy-pages`: the subset that
// covers each case of issue 20. zdtm checks the restored tasks' memory itself, so a pass means every
// page a task read was the page it had. The whole suite, stock beside ours: `npm run zdtm`
// (scripts/zdtm, docs/compat.md).
//
// The first run builds zdtm in the root (Debian's mirror: a few minutes, once); every zdtm run is
// bounded (runOne kills its process group, and with it zdtm's pid namespace, at the limit).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { caps, need } from './helpers/caps.js';
// @ts-ignore: plain JS (scripts/zdtm runs without a build)
import { NPM_TEST_SET, prepare, runOne, sysctlGuard } from '../scripts/zdtm/zdtm.mjs';

const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
const LOGS = mkdtempSync(join(tmpdir(), 'pc-zdtm-'));
/** How long one zdtm run may take: maps06 (20,480 regions) takes the longest, ~35 s on a busy 2-core VM. */
const RUN_LIMIT_S = 100;
/**
 * How zdtm's `criu lazy-pages` arguments reach ours (lazy-pages-shim.mjs): auto passes them as they
 * are once our lazy-pages takes CRIU's arguments; POSTCOPY_ZDTM_ARGS=criu-no-config leaves out
 * --no-default-config, translate maps them to the older --images/--page-server form.
 */
const ARGS = process.env.POSTCOPY_ZDTM_ARGS ?? 'auto';

interface Run {
  test: string;
  flavour: 'h' | 'ns';
  mode: 'lazy' | 'remote';
  impl: 'stock' | 'postcopy' | 'postcopy-nopush';
}
interface Result extends Run {
  status: 'pass' | 'fail' | 'skip' | 'timeout' | 'error';
  detail?: string;
  daemon?: string[];
  logs?: string;
  seconds: number;
}

let testDir: string | null = null;
let prepareError: Error | null = null;
let guard: { afterTest(): void; restore(): void } | null = null;
let failed = false;

after(() => {
  guard?.restore();
  if (!failed) rmSync(LOGS, { recursive: true, force: true });
  else console.log(`zdtm logs of the runs that failed: ${LOGS}`);
});

/** zdtm's test directory inside the root, built on first use; null: skipped (not root, no uffd). */
function zdtmDir(t: TestContext): string | null {
  if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return null;
  if (!testDir && !prepareError) {
    try {
      testDir = prepare(() => {});
    } catch (err) {
      prepareError = err as Error;
    }
  }
  if (prepareError) throw prepareError;
  // stock's page server wants 4 MiB pipes; a failed hugetlb test leaves vm.nr_hugepages at 20
  guard ??= sysctlGuard();
  return testDir;
}

async function zdtm(t: TestContext, run: Run): Promise<Result | null> {
  const dir = zdtmDir(t);
  if (!dir) return null;
  try {
    return (await runOne(dir, run, RUN_LIMIT_S, LOGS, ARGS)) as Result;
  } finally {
    guard!.afterTest();
  }
}

/** Passes, or fails with what zdtm and our daemon said. */
function assertPass(r: Result | null) {
  if (!r) return;
  if (r.status !== 'pass') failed = true;
  assert.equal(r.status, 'pass', `${r.test} (${r.flavour}, ${r.mode}, ${r.impl}): ${r.status}${r.detail ? `: ${r.detail}` : ''}\n  daemon: ${(r.daemon ?? []).join('\n  daemon: ') || '(nothing)'}\n  logs: ${r.logs ?? '-'}`);
}

describe('zdtm in lazy-pages modes, postcopy in the place of criu lazy-pages', () => {
  it('builds zdtm in the CRIU root from Debian\'s source of the root\'s own criu', (t) => {
    const dir = zdtmDir(t);
    if (!dir) return;
    assert.match(dir, /^\/var\/lib\/zdtm\/criu-\d+\.\d+(\.\d+)?\/test$/);
    for (const test of NPM_TEST_SET) assert.ok(existsSync(join(ROOT, dir, test)), `${test} is built`);
  });

  it("restores a multi-task tree through CRIU's page server (static/maps01, --remote-lazy-pages), its memory intact", async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/static/maps01', flavour: 'h', mode: 'remote', impl: 'postcopy' }));
  });

  it('restores a tree with zombies (transition/fork, --remote-lazy-pages)', async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/transition/fork', flavour: 'h', mode: 'remote', impl: 'postcopy' }));
  });

  it('serves a task of 20,480 memory regions (static/maps06, --remote-lazy-pages)', async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/static/maps06', flavour: 'h', mode: 'remote', impl: 'postcopy' }));
  });

  it('with --no-push, a child forked during post-copy reads its pages, not zeros (static/uffd-events passes its own memory check)', async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/static/uffd-events', flavour: 'h', mode: 'remote', impl: 'postcopy-nopush' }));
  });

  it('with --no-push, the daemon ends by itself once its tasks are gone (transition/fork2: zdtm waits for it, bounded)', async (t) => {
    const r = await zdtm(t, { test: 'zdtm/transition/fork2', flavour: 'h', mode: 'remote', impl: 'postcopy-nopush' });
    assertPass(r);
    if (r) assert.ok(r.seconds < RUN_LIMIT_S, `ended in ${r.seconds} s`);
  });

  it('serves the pages in the local images when there is no --page-server (static/pthread00, --lazy-pages)', async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/static/pthread00', flavour: 'h', mode: 'lazy', impl: 'postcopy' }));
  });

  it("restores a tree in zdtm's ns flavour, its own namespaces (static/maps01, --remote-lazy-pages)", async (t) => {
    assertPass(await zdtm(t, { test: 'zdtm/static/maps01', flavour: 'ns', mode: 'remote', impl: 'postcopy' }));
  });
});
