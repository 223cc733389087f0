// The criu gate (src/criu/criu-gate.ts) that `runc checkpoint` and `runc restore` run as their criu:
// the request it holds (a DUMP here) waits for go, and reaches the real criu whole; any other goes
// through at once. A fake criu on PATH writes down the request bytes it reads.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { need } from './helpers/caps.js';
import { GATE_FIFO, GATE_HELD, GatedRequest, writeGate } from '../src/criu/criu-gate.js';

const dir = mkdtempSync(join(tmpdir(), 'pc-gate-'));
const bin = join(dir, 'bin');
mkdirSync(bin);
const ran = join(dir, 'ran');
// The fake criu: reads the request from the fd it was given (swrk FD) and writes it down in hex.
writeFileSync(join(bin, 'criu'), `#!/usr/bin/env node\nconst fs = require('fs');\nconst b = Buffer.alloc(64);\nconst n = fs.readSync(Number(process.argv[3]), b);\nfs.writeFileSync(${JSON.stringify(ran)}, process.argv.slice(2).join(' ') + ' ' + b.subarray(0, n).toString('hex'));\n`);
chmodSync(join(bin, 'criu'), 0o755);
const gate = writeGate(dir, dir);
const hasPerl = spawnSync('perl', ['-e', 'use Socket; 1']).status === 0;

/** Runs the gate on one end of a socket pair carrying `request`; returns the child and its exit. */
function runGate(request: Buffer, held = GatedRequest.DUMP, underParent = false) {
  rmSync(ran, { force: true });
  for (const f of [GATE_FIFO, GATE_HELD]) rmSync(join(dir, f), { force: true });
  spawnSync('mkfifo', [join(dir, GATE_FIFO)]);
  const [ours, theirs] = native.socketpair(false);
  native.writeAll(ours, request, 0, request.length);
  // underParent: under a shell standing for runc, which writes the gate's pid to gate.pid
  const argv = underParent ? ['bash', '-c', `"$0" swrk 3 & echo $! > ${join(dir, 'gate.pid')}; wait`, gate] : [gate, 'swrk', '3'];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe', theirs], env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, POSTCOPY_CRIU_GATE: join(dir, GATE_FIFO), POSTCOPY_CRIU_GATE_REQUEST: String(held) } });
  native.close(theirs);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr, close: () => native.close(ours) };
}

const waitFor = async (what: () => boolean, ms: number) => {
  const deadline = Date.now() + ms;
  while (!what() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return what();
};

describe('criu gate', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('lets a VERSION request through to criu at once, the request whole', async (t) => {
    if (!need(t, hasPerl, 'perl with Socket (Debian\'s perl-base)')) return;
    const g = runGate(Buffer.from([0x08, 0x0a, 0x10, 0x01]));
    try {
      assert.equal(await g.exited, 0, g.stderr());
      assert.equal(readFileSync(ran, 'utf8'), 'swrk 3 080a1001');
      assert.equal(existsSync(join(dir, GATE_HELD)), false);
    } finally {
      g.close();
    }
  });

  it('a gate that holds RESTOREs lets a DUMP through at once', async (t) => {
    if (!need(t, hasPerl, 'perl with Socket (Debian\'s perl-base)')) return;
    const g = runGate(Buffer.from([0x08, 0x01]), GatedRequest.RESTORE);
    try {
      assert.equal(await g.exited, 0, g.stderr());
      assert.equal(readFileSync(ran, 'utf8'), 'swrk 3 0801');
    } finally {
      g.close();
    }
  });

  it('holds a DUMP request until go, then hands it to criu whole', async (t) => {
    if (!need(t, hasPerl, 'perl with Socket (Debian\'s perl-base)')) return;
    const g = runGate(Buffer.from([0x08, 0x01, 0x12, 0x00]));
    try {
      assert.ok(await waitFor(() => existsSync(join(dir, GATE_HELD)), 5000), 'the gate says it holds the DUMP');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(existsSync(ran), false, 'criu must not run before go');
      const fifo = openSync(join(dir, GATE_FIFO), 'w');
      writeFileSync(fifo, 'go\n');
      closeSync(fifo);
      assert.equal(await g.exited, 0, g.stderr());
      assert.equal(readFileSync(ran, 'utf8'), 'swrk 3 08011200');
    } finally {
      g.close();
    }
  });

  it('ends a held DUMP without running criu when told anything but go, or when its parent (runc) dies', async (t) => {
    if (!need(t, hasPerl, 'perl with Socket (Debian\'s perl-base)')) return;
    const g = runGate(Buffer.from([0x08, 0x01]));
    try {
      assert.ok(await waitFor(() => existsSync(join(dir, GATE_HELD)), 5000));
      const fifo = openSync(join(dir, GATE_FIFO), 'w');
      writeFileSync(fifo, 'abort\n');
      closeSync(fifo);
      assert.equal(await g.exited, 1);
      assert.equal(existsSync(ran), false);
    } finally {
      g.close();
    }
    // The gate under a parent that is SIGKILLed: it notices within a second and ends.
    const orphan = runGate(Buffer.from([0x08, 0x01]), GatedRequest.DUMP, true);
    try {
      assert.ok(await waitFor(() => existsSync(join(dir, GATE_HELD)), 5000));
      const gatePid = Number(readFileSync(join(dir, 'gate.pid'), 'utf8'));
      orphan.child.kill('SIGKILL');
      assert.ok(await waitFor(() => !existsSync(`/proc/${gatePid}`) || readFileSync(`/proc/${gatePid}/stat`, 'utf8').split(') ')[1].startsWith('Z'), 3000), 'the gate ends once runc is gone');
      assert.equal(existsSync(ran), false);
    } finally {
      orphan.close();
    }
  });
});
