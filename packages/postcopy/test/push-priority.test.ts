// The push's priority: each setting lowers the calling thread alone, as the kernel shows it.
// (Its own file: node:test runs it in a process of its own, whose main thread it lowers.)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { checkPushPriority, lowerThisThread } from '../src/util/push-priority.js';

const SCHED_OTHER = 0;
const SCHED_IDLE = 5;
/** this thread's scheduling policy and nice value, from /proc/thread-self/stat (fields 41 and 19) */
function mine(): { policy: number; nice: number } {
  const stat = readFileSync('/proc/thread-self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3
  return { nice: Number(f[19 - 3]), policy: Number(f[41 - 3]) };
}

describe("the push's priority", () => {
  it('normal leaves the thread be; nice is nice 19; idle is SCHED_IDLE; anything else is refused', () => {
    assert.deepEqual(mine(), { policy: SCHED_OTHER, nice: 0 });
    lowerThisThread('normal');
    assert.deepEqual(mine(), { policy: SCHED_OTHER, nice: 0 });
    lowerThisThread('nice');
    assert.deepEqual(mine(), { policy: SCHED_OTHER, nice: 19 });
    lowerThisThread('idle');
    assert.equal(mine().policy, SCHED_IDLE);
    assert.equal(native.setIdlePolicy(false), 0);
    assert.equal(mine().policy, SCHED_OTHER);
    assert.throws(() => checkPushPriority('low'), (e: { code?: string }) => e.code === 'ERR_INVALID_ARG');
  });
});
