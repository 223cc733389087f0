// The demo's workload: a process holding verifiable state in one anonymous region, computing on it.
//   source mode: fill the state, compute; on SIGUSR2 stop at a step boundary (SIGSTOP to itself).
//   target mode: map the same range, register it with a userfaultfd, hand the uffd to the fault
//     handler on fd 3, then continue the computation from the step stored in the state.
//     On SIGUSR2, write the hash of every page as it arrived from the source, and exit.
import { writeFileSync } from 'node:fs';
import { C, native } from '../native/index.js';
import { hashWords } from '../util/pagehash.js';
import { encodeHandoff } from '../target/handoff.js';

const PAGE = 4096;
const WORDS = PAGE / 4;
const MAGIC = 0x57524b4c;
const H = { MAGIC: 0, SEED: 1, STEP: 2, PAGES: 3, FILLED: 4, ACC: 5, FAILURES: 6 } as const;

function say(obj: object): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fillPage(w: Uint32Array, p: number, seed: number, version: number): void {
  const o = p * WORDS;
  let x = (seed ^ Math.imul(p, 0x9e3779b1) ^ Math.imul(version + 1, 0x85ebca77)) >>> 0 || 1;
  w[o] = p;
  w[o + 1] = version;
  for (let i = 2; i < WORDS - 1; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[o + i] = x >>> 0;
  }
  w[o + WORDS - 1] = hashWords(w, o, WORDS - 1);
}

/** One step of the computation: check a page, rewrite it, fold it into the accumulator. */
function step(w: Uint32Array, onFirstWrite?: (p: number) => void): void {
  const s = w[H.STEP];
  const filled = w[H.FILLED];
  const p = 1 + (Math.imul(s + 1, 0x2545f491) >>> 0) % (filled - 1);
  const o = p * WORDS;
  if (w[o] !== p || w[o + WORDS - 1] !== hashWords(w, o, WORDS - 1)) w[H.FAILURES]++;
  onFirstWrite?.(p);
  fillPage(w, p, w[H.SEED], w[o + 1] + 1);
  w[H.ACC] = (Math.imul(w[H.ACC], 31) + w[o + WORDS - 1]) >>> 0;
  w[H.STEP] = s + 1;
}

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`--${name} is required`);
  return fallback;
}

function runSource(): void {
  const pages = Math.floor((Number(arg('mib')) * 1024 * 1024) / PAGE);
  const filled = pages - Math.floor(pages / 16); // the tail stays untouched: the source serves it as ZERO
  const seed = Number(arg('seed', '12345')) >>> 0;
  const addr = native.mmapAnon(pages * PAGE);
  const w = new Uint32Array(native.viewMemory(addr, pages * PAGE));
  for (let p = 1; p < filled; p++) fillPage(w, p, seed, 0);
  w.set([MAGIC, seed, 0, pages, filled, 0, 0], 0);
  let freeze = false;
  process.on('SIGUSR2', () => {
    freeze = true;
  });
  say({ event: 'ready', pid: process.pid, addr, length: pages * PAGE, pages, filled });
  const burst = (): void => {
    if (freeze) {
      say({ event: 'frozen', step: w[H.STEP], acc: w[H.ACC], failures: w[H.FAILURES] });
      process.kill(process.pid, 'SIGSTOP');
      return;
    }
    for (let i = 0; i < 2000; i++) step(w);
    setImmediate(burst);
  };
  setImmediate(burst);
}

function runTarget(): void {
  const addr = Number(arg('addr'));
  const length = Number(arg('length'));
  const sock = Number(arg('fd', '3'));
  let local: number;
  try {
    local = native.mmapAnon(length, addr, true); // the same address, as a restored process would have
  } catch {
    local = native.mmapAnon(length); // the state holds no pointers, so any address will do
  }
  const uffd = native.uffdOpen(true);
  native.uffdApi(uffd, 0n);
  native.uffdRegister(uffd, local, length, C.UFFDIO_REGISTER_MODE_MISSING);
  native.sendFd(sock, uffd, encodeHandoff(process.pid, [{ regionId: Number(arg('region', '0')), localStart: local, length }]));
  native.close(uffd); // the handler holds it now
  const ack = Buffer.alloc(1);
  if (native.readFull(sock, ack, 0, 1) !== 1) throw new Error('the fault handler did not acknowledge the userfaultfd');

  const w = new Uint32Array(native.viewMemory(local, length));
  const pages = length / PAGE;
  const original = new Uint32Array(pages);
  const dirty = new Uint8Array(pages);
  const keep = (p: number) => {
    if (!dirty[p]) {
      dirty[p] = 1;
      original[p] = hashWords(w, p * WORDS, WORDS);
    }
  };
  keep(0); // the header changes every step
  if (w[H.MAGIC] !== MAGIC) throw new Error('the migrated state has no workload header');
  const startStep = w[H.STEP];
  step(w, keep);
  say({ event: 'running', step: startStep });
  let finish = false;
  process.on('SIGUSR2', () => {
    finish = true;
  });
  const burst = (): void => {
    if (finish) {
      for (let p = 0; p < pages; p++) if (!dirty[p]) original[p] = hashWords(w, p * WORDS, WORDS);
      writeFileSync(arg('hashes'), original);
      say({ event: 'finished', steps: w[H.STEP] - startStep, failures: w[H.FAILURES], acc: w[H.ACC] });
      process.exit(0);
    }
    for (let i = 0; i < 200; i++) step(w, keep);
    setImmediate(burst);
  };
  setImmediate(burst);
}

if (process.argv[2] === 'source') runSource();
else if (process.argv[2] === 'target') runTarget();
else {
  process.stderr.write('usage: workload source --mib N [--seed S] | target --addr A --length L --hashes FILE [--fd 3]\n');
  process.exit(2);
}
