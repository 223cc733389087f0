// Waiting for an fd on the event loop's thread without a libuv watcher: the fds here (uffd
// handovers, CRIU's lazy-pages socket, pidfds) are raw, owned by the addon's calls.
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';

/**
 * Waits in blocking polls of at most a millisecond, the event loop running between them: the fd is
 * seen ready at once. (A 1 ms timer between non-blocking polls took 1–2 ms a step, and `criu
 * restore` waits for several such steps, its uffd handover among them, within its downtime.)
 */
export async function waitReadable(fd: number, timeoutMs: number, what: string): Promise<void> {
  const fds = Int32Array.of(fd);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (native.pollIn(fds, Math.max(0, Math.min(1, deadline - Date.now()))) !== 0) return;
    if (Date.now() >= deadline) throw new PostcopyError('ERR_TIMEOUT', `${what} did not arrive in ${timeoutMs} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
