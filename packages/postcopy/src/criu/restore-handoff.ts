// What `criu restore --lazy-pages` says on lazy-pages.socket: for each task an int pid, then, for a
// live task (pid > 0), one byte carrying its userfaultfd (SCM_RIGHTS); a negative pid is a zombie
// with no fd. Then the u32 RESTORE_FINISHED. Read without blocking the event loop: a peer that
// stalls mid-message gets ERR_TIMEOUT, not a hung daemon.
import { PostcopyError } from '../errors.js';
import { C, native } from '../native/index.js';
import { waitReadable } from '../util/wait-readable.js';

export const LAZY_PAGES_RESTORE_FINISHED = 0x52535446;

export interface RestoreHandoffOptions {
  /** the pids the images list: one message each */
  pids: readonly number[];
  timeoutMs: number;
  /** called as each live task's uffd arrives; it owns the fd from then on */
  onTask: (pid: number, uffd: number) => Promise<void> | void;
}

export interface RestoreHandoff {
  tasks: number[];
  zombies: number[];
}

export async function readRestoreHandoff(conn: number, o: RestoreHandoffOptions): Promise<RestoreHandoff> {
  native.setBlocking(conn, false);
  const deadline = Date.now() + o.timeoutMs;
  const left = () => Math.max(0, deadline - Date.now());
  const int32 = Buffer.alloc(4);
  const readInt32 = async (what: string): Promise<number> => {
    for (let got = 0; got < 4; ) {
      await waitReadable(conn, left(), what);
      const n = native.readInto(conn, int32, got, 4 - got);
      if (n === 0) throw new PostcopyError('ERR_PEER_CLOSED', `criu restore closed the lazy-pages socket before ${what}`);
      if (n === -C.EAGAIN) continue;
      if (n < 0) throw new PostcopyError('ERR_PEER_CLOSED', `reading the lazy-pages socket failed: errno ${-n}`);
      got += n;
    }
    return int32.readInt32LE(0);
  };
  const tasks: number[] = [];
  const zombies: number[] = [];
  const pending = new Set(o.pids);
  const marker = Buffer.alloc(1);
  for (let i = 0; i < o.pids.length; i++) {
    const pid = await readInt32('the next task pid');
    const known = pending.delete(Math.abs(pid));
    if (pid < 0 && known) {
      zombies.push(-pid);
      continue;
    }
    if (!known || pid === 0) throw new PostcopyError('ERR_IMAGE', `criu restore sent task ${pid}, which the images do not list (or sent twice)`);
    await waitReadable(conn, left(), `the userfaultfd of task ${pid}`);
    let received: { bytes: number; fd: number };
    try {
      received = native.recvFd(conn, marker);
    } catch (err) {
      throw new PostcopyError('ERR_PEER_CLOSED', `receiving the userfaultfd of task ${pid} failed: ${(err as Error).message}`);
    }
    if (received.bytes === 0) throw new PostcopyError('ERR_PEER_CLOSED', `criu restore closed the lazy-pages socket before the userfaultfd of task ${pid}`);
    if (received.fd < 0) throw new PostcopyError('ERR_PROTOCOL', `criu restore sent task ${pid} without its userfaultfd`);
    tasks.push(pid);
    await o.onTask(pid, received.fd);
  }
  const fin = await readInt32('the end of the restore');
  if (fin >>> 0 !== LAZY_PAGES_RESTORE_FINISHED) throw new PostcopyError('ERR_PROTOCOL', `criu restore ended with 0x${(fin >>> 0).toString(16)}, not RESTORE_FINISHED`);
  return { tasks, zombies };
}
