// --copy-bundle: a container's bundle (config.json and its root filesystem) from the source host
// to the destination, as a tar stream in BUNDLE frames on the agents' connection. A first pass
// while the container still runs; during the downtime, a second pass with the files changed since
// (by mtime: a file deleted meanwhile stays on the destination).
import { spawn } from 'node:child_process';
import { PostcopyError } from '../errors.js';
import { AgentType, MAX_BUNDLE_BODY, type MessageOf } from '../protocol/agent.js';
import type { AgentChannel } from '../transport/agent-channel.js';

/** Streams dir (a path on this host) as tar; files modified at or after sinceMs only, if given. Returns the bytes sent. */
export async function sendBundle(ch: AgentChannel, dir: string, sinceMs?: number): Promise<number> {
  const args = ['-C', dir, ...(sinceMs === undefined ? [] : [`--newer-mtime=@${Math.floor(sinceMs / 1000)}`]), '-cf', '-', '.'];
  const tar = spawn('tar', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise<number | null>((resolve) => tar.on('close', (code) => resolve(code)));
  let bytes = 0;
  try {
    for await (const chunk of tar.stdout as AsyncIterable<Buffer>) {
      for (let o = 0; o < chunk.length; o += MAX_BUNDLE_BODY) {
        const piece = chunk.subarray(o, o + MAX_BUNDLE_BODY);
        await ch.sendDrained({ type: AgentType.BUNDLE, data: piece });
        bytes += piece.length;
      }
    }
  } catch (err) {
    tar.kill('SIGKILL');
    throw err;
  }
  const code = await exited;
  if (code !== 0) throw new PostcopyError('ERR_INVALID_ARG', `cannot read the bundle ${dir} (tar exit ${code}): ${stderr.trim()}`);
  ch.send({ type: AgentType.BUNDLE_END, bytes, delta: sinceMs !== undefined });
  return bytes;
}

/** Unpacks one tar stream of BUNDLE frames into dir (made beforehand). */
export class BundleReceiver {
  #tar;
  #stderr = '';
  #bytes = 0;
  #exited: Promise<number | null>;

  constructor(readonly dir: string) {
    this.#tar = spawn('tar', ['-C', dir, '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.#tar.stdin.on('error', () => {}); // a tar that died says so at end()
    this.#tar.stderr.on('data', (d) => (this.#stderr = (this.#stderr + d).slice(-2000)));
    this.#exited = new Promise((resolve) => this.#tar.on('close', (code) => resolve(code)));
  }

  async write(data: Uint8Array): Promise<void> {
    this.#bytes += data.length;
    if (!this.#tar.stdin.write(data)) await new Promise((resolve) => this.#tar.stdin.once('drain', resolve).once('close', resolve));
  }

  /** The stream's end: every byte announced came, and tar wrote every file. */
  async end(announced: number): Promise<void> {
    this.#tar.stdin.end();
    const code = await this.#exited;
    if (announced !== this.#bytes) throw new PostcopyError('ERR_PROTOCOL', `the bundle stream announced ${announced} bytes, ${this.#bytes} came`);
    if (code !== 0) throw new PostcopyError('ERR_INVALID_ARG', `cannot unpack the bundle into ${this.dir} (tar exit ${code}): ${this.#stderr.trim()}`);
  }

  kill(): void {
    this.#tar.kill('SIGKILL');
  }
}

/**
 * Receives one tar stream (BUNDLE frames, then BUNDLE_END) into dir, starting with `first` if the
 * caller read it already; any other message meanwhile is ERR_PROTOCOL.
 */
export async function receiveBundle(ch: AgentChannel, dir: string, delta: boolean, timeoutMs: number, first?: MessageOf<AgentType.BUNDLE | AgentType.BUNDLE_END>): Promise<number> {
  const rx = new BundleReceiver(dir);
  try {
    for (let m = first; ; m = undefined) {
      m ??= await ch.next([AgentType.BUNDLE, AgentType.BUNDLE_END], timeoutMs);
      if (m.type === AgentType.BUNDLE) {
        await rx.write(m.data);
        continue;
      }
      if (m.delta !== delta) throw new PostcopyError('ERR_PROTOCOL', `a ${m.delta ? 'delta' : 'first'} bundle stream where a ${delta ? 'delta' : 'first'} one was expected`);
      await rx.end(m.bytes);
      return m.bytes;
    }
  } catch (err) {
    rx.kill();
    throw err;
  }
}
