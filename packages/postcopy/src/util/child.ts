// Child processes that speak in lines on stdout: start them, wait for a line, collect the rest.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { PostcopyError } from '../errors.js';
import { parseCliEvent, type CliCommand, type CliEvent, type CliEventName } from '../protocol/cli-events.js';

/** argv that runs one of our modules with this Node.js, through tsx when we run from sources. */
export function nodeModuleArgv(callerUrl: string, relative: string): string[] {
  const fromSource = callerUrl.endsWith('.ts');
  const script = new URL(`${relative}${fromSource ? '.ts' : '.js'}`, callerUrl).pathname;
  return fromSource ? [process.execPath, '--import', 'tsx', script] : [process.execPath, script];
}

export class LineChild {
  readonly child: ChildProcess;
  readonly name: string;
  #lines: string[] = [];
  #stderr = '';
  #waiter: (() => void) | null = null;
  #exit: string | null = null;
  readonly exited: Promise<string>;

  constructor(name: string, argv: string[]) {
    this.name = name;
    // Its own process group, so that kill() reaches whatever it started too (a shell's children).
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.child.stdin!.on('error', () => {}); // a child that died is reported by next() and rest()
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.#lines.push(l);
      this.#waiter?.();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.#exit = `could not start: ${err.message}`;
        this.#waiter?.();
        resolve(this.#exit);
      });
      this.child.on('close', (code, signal) => {
        this.#exit = signal ? `killed by ${signal}` : `exit ${code}`;
        this.#waiter?.();
        resolve(this.#exit);
      });
    });
  }

  get stderr(): string {
    return this.#stderr.trim();
  }

  /** Waits for the first unread line that matches, and returns it (earlier lines are dropped). */
  async next(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#lines.findIndex(match);
      if (i >= 0) return this.#lines.splice(0, i + 1)[i];
      if (this.#exit) throw this.#failure(`${this.name} ended (${this.#exit}) before it said what was expected`);
      if (Date.now() > deadline) throw new PostcopyError('ERR_TIMEOUT', `${this.name} said nothing expected within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiter = null;
    }
  }

  /** Waits for the first unread line that is this event of the command (checked against its schema), and returns it. */
  async event<C extends CliCommand, E extends CliEventName<C>>(command: C, event: E, timeoutMs: number): Promise<CliEvent<C, E>> {
    let found: CliEvent<C, E> | null = null;
    await this.next((l) => (found = parseCliEvent(command, event, l)) !== null, timeoutMs);
    return found!;
  }

  /** Waits for the child to exit successfully and returns every unread line. */
  async rest(timeoutMs: number): Promise<string[]> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const how = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (how === 'timeout') {
      this.kill();
      throw new PostcopyError('ERR_TIMEOUT', `${this.name} did not finish within ${timeoutMs} ms`);
    }
    if (how !== 'exit 0') throw this.#failure(`${this.name} failed (${how})`);
    return this.#lines.splice(0);
  }

  /** Writes one line to the child's stdin. */
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Closes the child's stdin (end of its input). */
  endInput(): void {
    this.child.stdin!.end();
  }

  /** Signals the child's whole process group (once it has exited, what it left behind). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    try {
      if (this.child.pid) process.kill(-this.child.pid, signal);
    } catch {
      if (this.#exit === null) this.child.kill(signal);
    }
  }

  #failure(message: string): PostcopyError {
    const code = /ERR_[A-Z_]+/.exec(this.#stderr)?.[0];
    return new PostcopyError(code === 'ERR_PRIVILEGE' ? 'ERR_PRIVILEGE' : 'ERR_CHILD', this.stderr ? `${message}: ${this.stderr}` : message);
  }
}

/** Runs `cleanup` and exits (130 or 143) on SIGINT or SIGTERM, until the function it returns is called. */
export function cleanupOnSignal(cleanup: () => void): () => void {
  const onSignal = (sig: NodeJS.Signals) => {
    cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}
