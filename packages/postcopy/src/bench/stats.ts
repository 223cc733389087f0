// Latency statistics over pooled samples, in microseconds.
export interface Summary {
  n: number;
  mean: number;
  sd: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

/** samplesNs: every fault of every measured trial. */
export function summarize(samplesNs: ArrayLike<number>): Summary {
  const a = Float64Array.from(samplesNs).sort();
  const n = a.length;
  if (n === 0) return { n: 0, mean: NaN, sd: NaN, p50: NaN, p99: NaN, min: NaN, max: NaN };
  let sum = 0;
  for (const x of a) sum += x;
  const mean = sum / n;
  let sq = 0;
  for (const x of a) sq += (x - mean) ** 2;
  const at = (q: number) => a[Math.min(n - 1, Math.floor(q * n))];
  const us = (ns: number) => Math.round(ns / 10) / 100;
  return { n, mean: us(mean), sd: us(Math.sqrt(n > 1 ? sq / (n - 1) : 0)), p50: us(at(0.5)), p99: us(at(0.99)), min: us(a[0]), max: us(a[n - 1]) };
}

/** Parses {trial, ns} lines, drops the warm-up trials (numbered below `warmup`), and pools the rest. */
export function poolTrials(lines: string[], warmup: number): number[] {
  const out: number[] = [];
  for (const line of lines) {
    if (!line.startsWith('{"trial"')) continue;
    const t = JSON.parse(line) as { trial: number; ns: number[] };
    if (t.trial >= warmup) out.push(...t.ns);
  }
  return out;
}
