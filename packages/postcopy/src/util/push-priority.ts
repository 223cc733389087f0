// How much CPU a push thread may take from the task it serves. Linux schedules threads, so each
// push thread (the target's, and the source's thread for a connection that asks with BACKGROUND)
// lowers itself alone:
//   normal: as any thread; nice: nice 19 (CFS weight 15 against 1024); idle: SCHED_IDLE (runs only
//   when nothing else wants the CPU). Faults are never lowered.
import { setPriority } from 'node:os';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';

export type PushPriority = 'normal' | 'nice' | 'idle';
export const PUSH_PRIORITIES: readonly PushPriority[] = ['normal', 'nice', 'idle'];

export function checkPushPriority(p: unknown): PushPriority {
  if (PUSH_PRIORITIES.includes(p as PushPriority)) return p as PushPriority;
  throw new PostcopyError('ERR_INVALID_ARG', `the push's priority is normal, nice or idle, not ${String(p)}`);
}

/** Lowers the calling thread as `p` says; what the kernel refuses is ignored (the push still runs). */
export function lowerThisThread(p: PushPriority | undefined): void {
  if (p === 'nice') {
    try {
      setPriority(0, 19); // who = 0: this thread alone on Linux
    } catch {
      // not permitted: run at the default
    }
  } else if (p === 'idle') native.setIdlePolicy(true);
}
