import cliProgress from 'cli-progress';
import type { Progress } from '../target/handler.js';

/** A live bar of pages present (faulted / pushed / total), on a TTY only. */
export function progressBar(): { update: (p: Progress) => void; stop: () => void } | null {
  if (!process.stderr.isTTY) return null;
  const bar = new cliProgress.SingleBar(
    { format: 'pages {bar} {value}/{total} | faulted {faulted} | pushed {pushed} | zero {zero}', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (p) => {
      if (!started) {
        bar.start(p.pages, 0, { faulted: 0, pushed: 0, zero: 0 });
        started = true;
      }
      bar.update(p.present, { faulted: p.faulted, pushed: p.pushed, zero: p.zero });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** A bar of steps (a benchmark's, a migration's), on a TTY only. */
export function stepBar(what = 'bench'): { update: (done: number, total: number, label: string) => void; stop: () => void } | null {
  if (!process.stderr.isTTY) return null;
  const bar = new cliProgress.SingleBar({ format: `${what} {bar} {value}/{total} | {label}`, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update: (done, total, label) => {
      if (!started) {
        bar.start(total, 0, { label });
        started = true;
      }
      bar.update(done, { label });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}
