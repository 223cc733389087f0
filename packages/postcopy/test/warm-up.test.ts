// Warming the target's memory before the freeze (src/target/warm-up.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PostcopyError } from '../src/errors.js';
import { anonymousBytes, memAvailable, warmUpMemory } from '../src/target/warm-up.js';

describe('memory warm-up', () => {
  it('writes every page it is asked for (one fault each) and frees them again', () => {
    const before = process.resourceUsage().minorPageFault;
    const anonBefore = anonymousBytes(process.pid);
    const r = warmUpMemory(64 << 20);
    const faults = process.resourceUsage().minorPageFault - before;
    assert.equal(r.bytes, 64 << 20);
    assert.ok(faults >= (64 << 20) / 4096, `${faults} faults for ${(64 << 20) / 4096} pages`);
    assert.ok(anonymousBytes(process.pid) < anonBefore + (32 << 20), 'the memory is freed again');
  });

  it('never takes more than half of the memory available, and refuses nonsense', () => {
    assert.equal(warmUpMemory(1 << 30, 8 << 20).bytes, 4 << 20);
    assert.equal(warmUpMemory(0).bytes, 0);
    assert.equal(warmUpMemory(5000, 1 << 30).bytes, 4096, 'whole pages only');
    for (const bad of [-1, 1.5, Number.NaN])
      assert.throws(() => warmUpMemory(bad), (e: unknown) => e instanceof PostcopyError && e.code === 'ERR_INVALID_ARG');
  });

  it('reads MemAvailable and a process\'s anonymous memory', () => {
    assert.equal(memAvailable('MemTotal:  100 kB\nMemAvailable:     2048 kB\n'), 2048 * 1024);
    assert.throws(() => memAvailable('MemTotal: 1 kB\n'), (e: unknown) => e instanceof PostcopyError && e.code === 'ERR_INVALID_ARG');
    assert.ok(anonymousBytes(process.pid) > 1 << 20);
    assert.throws(() => anonymousBytes(0x7ffffff0), (e: unknown) => e instanceof PostcopyError && e.code === 'ERR_SOURCE_GONE');
  });
});
