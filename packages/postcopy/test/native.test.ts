// Tests run against the binding itself: real syscalls, real faults from another thread.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { C, native } from '../src/native/index.js';
import { caps, need } from './helpers/caps.js';

const PS = 4096;
const toucher = new URL('./helpers/toucher.mjs', import.meta.url);

function touchFromWorker(addr: number, count: number, stride = PS): Promise<{ ns: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(toucher, { workerData: { addr, count, stride, write: false, timed: false } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

describe('native binding', () => {
  it('maps anonymous memory and views it', () => {
    const addr = native.mmapAnon(4 * PS);
    const view = new Uint8Array(native.viewMemory(addr, 4 * PS));
    view[PS] = 42;
    const out = Buffer.alloc(PS);
    assert.equal(native.processVmReadv(process.pid, addr + PS, out, 0, PS), PS);
    assert.equal(out[0], 42);
    native.munmap(addr, 4 * PS);
  });

  it('throws errno errors with a code', () => {
    assert.throws(() => native.munmap(1, PS), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && e.syscall === 'munmap');
    assert.throws(() => native.uffdApi(-1, 0n), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  });

  it('resolves a real fault from another thread with UFFDIO_COPY and ZEROPAGE', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const len = 2 * PS;
    const addr = native.mmapAnon(len);
    const uffd = native.uffdOpen(true);
    const api = native.uffdApi(uffd, 0n);
    assert.ok(api.ioctls > 0n);
    native.uffdRegister(uffd, addr, len, C.UFFDIO_REGISTER_MODE_MISSING);
    const touched = touchFromWorker(addr, 2);
    const msg = Buffer.alloc(C.UFFD_MSG_SIZE);
    const fds = Int32Array.of(uffd);
    // first fault: page 0, answered with data
    assert.equal(native.pollIn(fds, 5000), 1);
    assert.equal(native.readInto(uffd, msg, 0, msg.length), C.UFFD_MSG_SIZE);
    assert.equal(msg[0], C.UFFD_EVENT_PAGEFAULT);
    assert.equal(Math.floor(Number(msg.readBigUInt64LE(16)) / PS) * PS, addr);
    const page = Buffer.alloc(PS, 0xab);
    assert.equal(native.uffdCopy(uffd, addr, page, 0, PS, false), PS);
    assert.equal(native.uffdCopy(uffd, addr, page, 0, PS, false), -C.EEXIST);
    // second fault: page 1, answered with a zero page
    assert.equal(native.pollIn(fds, 5000), 1);
    assert.equal(native.readInto(uffd, msg, 0, msg.length), C.UFFD_MSG_SIZE);
    assert.equal(Math.floor(Number(msg.readBigUInt64LE(16)) / PS) * PS, addr + PS);
    assert.equal(native.uffdZeropage(uffd, addr + PS, PS, false), PS);
    await touched;
    const view = new Uint8Array(native.viewMemory(addr, len));
    assert.equal(view[0], 0xab);
    assert.equal(view[PS], 0);
    assert.equal(native.readInto(uffd, msg, 0, msg.length), -C.EAGAIN);
    native.close(uffd);
    native.munmap(addr, len);
  });

  it('passes a file descriptor over a Unix socket', () => {
    const [a, b] = native.socketpair();
    const efd = native.eventfd();
    native.sendFd(a, efd, Buffer.from('hi'));
    const buf = Buffer.alloc(16);
    const got = native.recvFd(b, buf);
    assert.equal(got.bytes, 2);
    assert.ok(got.fd >= 0 && got.fd !== efd);
    native.eventfdSignal(got.fd); // same eventfd: readable through the original
    assert.equal(native.pollIn(Int32Array.of(efd), 1000), 1);
    for (const fd of [a, b, efd, got.fd]) native.close(fd);
  });

  it('reads another process with process_vm_readv and reports ESRCH when it is gone', async (t) => {
    if (!need(t, caps.processVmReadv.ok, caps.processVmReadv.detail)) return;
    const child = spawn('sleep', ['30']);
    await new Promise((r) => child.once('spawn', r));
    const maps = (await import('node:fs')).readFileSync(`/proc/${child.pid}/maps`, 'utf8');
    const stack = maps.split('\n').find((l) => l.endsWith('[stack]'))!;
    const [lo] = stack.split(' ')[0].split('-').map((x) => parseInt(x, 16));
    const buf = Buffer.alloc(PS);
    assert.equal(native.processVmReadv(child.pid!, lo, buf, 0, PS), PS);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.equal(native.processVmReadv(child.pid!, lo, buf, 0, PS), -C.ESRCH);
  });

  it('names the process at the other end of a Unix socket, and tells when a process has exited', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-peer-'));
    const listen = native.unixListen(join(dir, 'sock'), 4);
    const child = spawn(process.execPath, ['-e', `require('net').connect(${JSON.stringify(join(dir, 'sock'))}); setTimeout(() => {}, 30000)`]);
    try {
      await new Promise((r) => child.once('spawn', r));
      assert.equal(native.pollIn(Int32Array.of(listen), 10_000), 1, 'the child connects');
      const conn = native.accept(listen);
      assert.equal(native.peerPid(conn), child.pid);
      const pidfd = native.pidfdOpen(child.pid!);
      assert.ok(pidfd >= 0);
      assert.equal(native.pollIn(Int32Array.of(pidfd), 0), 0, 'running: not readable');
      child.kill('SIGKILL');
      assert.equal(native.pollIn(Int32Array.of(pidfd), 5000), 1, 'readable once it has exited');
      for (const fd of [conn, pidfd]) native.close(fd);
    } finally {
      child.kill('SIGKILL');
      native.close(listen);
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(native.pidfdOpen(2 ** 22 + 1), -C.ESRCH, 'no such process');
    assert.ok(native.peerPid(-1) < 0);
  });

  it('tells a process that shares our memory from one that does not (kcmp)', () => {
    const pkg = fileURLToPath(new URL('..', import.meta.url));
    const script = `process.stdout.write(String(require('node-gyp-build')(${JSON.stringify(pkg)}).sameMemory(process.pid, process.ppid)))`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', cwd: pkg });
    assert.equal(child.stdout, '0', `a child process has a memory of its own: ${child.stderr}`);
    assert.equal(native.sameMemory(process.pid, process.pid), 1);
    assert.ok(native.sameMemory(process.pid, 2 ** 22 + 1) < 0, 'no such process');
  });

  it('rejects out-of-range buffer spans instead of overrunning', () => {
    assert.throws(() => native.readInto(0, Buffer.alloc(8), 4, 8), RangeError);
    assert.throws(() => native.writeAll(1, Buffer.alloc(8), -1, 2), RangeError);
  });
});
