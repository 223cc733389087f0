// Which pairs tiematch batch matches, chosen as Tapioca's modes choose them, and where a MICMAC
// project keeps each image's keypoints and each pair's result (DefautChantierDescripteur.xml):
// Pastis/LBPp<img>.dat and Pastis/LBPp-Match-LBPp<A>/LBPp<B>.result.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TiematchError } from '../errors.js';

/** An ordered pair: a (file1) is indexed, b (file2) is queried. */
export interface Pair {
  a: string;
  b: string;
}

export type PairSelection = { mode: 'All' } | { mode: 'Line'; n: number } | { mode: 'File'; path: string } | { mode: 'MulScale'; k: number };

const KEY = 'LBPp';

export function keypointPath(dir: string, image: string): string {
  return join(dir, 'Pastis', `${KEY}${image}.dat`);
}

export function resultPath(dir: string, pair: Pair): string {
  return join(dir, 'Pastis', `${KEY}-Match-${KEY}${pair.a}`, `${KEY}${pair.b}.result`);
}

/** The images of a project: every Pastis/LBPp<img>.dat, in name order. */
export function projectImages(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(join(dir, 'Pastis'));
  } catch (e) {
    throw new TiematchError('ERR_INPUT', `${join(dir, 'Pastis')}: cannot list keypoint files (${(e as Error).message}); a MICMAC project holds Pastis/LBPp<img>.dat`, { cause: e });
  }
  return names
    .filter((f) => f.startsWith(KEY) && f.endsWith('.dat') && f.length > KEY.length + 4)
    .map((f) => f.slice(KEY.length, -4))
    .sort(byName);
}

const byName = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);

/** `All`, `Line:N`, `File:PAIRS.xml` or `MulScale:K`, as given to --pairs. */
export function parseSelection(spec: string): PairSelection {
  const [mode, arg] = [spec.split(':')[0], spec.slice(spec.indexOf(':') + 1)];
  const count = (what: string): number => {
    const n = Number(arg);
    if (!spec.includes(':') || !Number.isInteger(n) || n < 1) throw new TiematchError('ERR_INVALID_ARG', `--pairs ${spec}: ${what} must be a positive integer`);
    return n;
  };
  if (spec === 'All') return { mode: 'All' };
  if (mode === 'Line') return { mode: 'Line', n: count('N') };
  if (mode === 'MulScale') return { mode: 'MulScale', k: count('K') };
  if (mode === 'File' && spec.includes(':') && arg) return { mode: 'File', path: arg };
  throw new TiematchError('ERR_INVALID_ARG', `--pairs ${spec}: All, Line:N, File:PAIRS.xml or MulScale:K`);
}

/** Every ordered pair of distinct images. */
export function allPairs(images: string[]): Pair[] {
  return images.flatMap((a) => images.filter((b) => b !== a).map((b) => ({ a, b })));
}

/** Each image with its n neighbours on each side in name order, both ways. */
export function linePairs(images: string[], n: number): Pair[] {
  return images.flatMap((a, i) => images.filter((_, j) => j !== i && Math.abs(j - i) <= n).map((b) => ({ a, b })));
}

const unescapeXml = (s: string): string => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

/** MICMAC's pair list: <SauvegardeNamedRel> holding <Cple>A B</Cple>, each an ordered pair. */
export function parsePairList(text: string, what: string): Pair[] {
  const body = /<SauvegardeNamedRel>([\s\S]*)<\/SauvegardeNamedRel>/.exec(text.replace(/<!--[\s\S]*?-->/g, ''));
  if (!body) throw new TiematchError('ERR_PAIR_LIST', `${what}: no <SauvegardeNamedRel> element`);
  const pairs: Pair[] = [];
  const seen = new Set<string>();
  for (const m of body[1].matchAll(/<Cple>([^<]*)<\/Cple>/g)) {
    const names = unescapeXml(m[1]).trim().split(/\s+/);
    if (names.length !== 2 || !names[0]) throw new TiematchError('ERR_PAIR_LIST', `${what}: <Cple>${m[1]}</Cple> does not name two images`);
    const key = `${names[0]}\n${names[1]}`;
    if (names[0] === names[1] || seen.has(key)) continue;
    seen.add(key);
    pairs.push({ a: names[0], b: names[1] });
  }
  return pairs;
}

export function readPairList(path: string): Pair[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TiematchError('ERR_PAIR_LIST', `cannot read the pair list ${path}: ${(e as Error).message}`, { cause: e });
  }
  return parsePairList(text, path);
}

/** The pairs a selection names (MulScale: all pairs, before its first pass keeps some). */
export function selectPairs(images: string[], selection: PairSelection): Pair[] {
  switch (selection.mode) {
    case 'All':
    case 'MulScale':
      return allPairs(images);
    case 'Line':
      return linePairs(images, selection.n);
    case 'File':
      return readPairList(selection.path);
  }
}

/** Pairs grouped by the image they index, groups and their members in name order. */
export function groupByIndex(pairs: Pair[]): { a: string; bs: string[] }[] {
  const groups = new Map<string, string[]>();
  for (const p of pairs) {
    const g = groups.get(p.a);
    if (g) g.push(p.b);
    else groups.set(p.a, [p.b]);
  }
  return [...groups.keys()].sort(byName).map((a) => ({ a, bs: groups.get(a)!.sort(byName) }));
}

/** `I/N`, 1 <= I <= N. */
export function parseShard(spec: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(spec);
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!(index >= 1 && count >= 1 && index <= count)) throw new TiematchError('ERR_INVALID_ARG', `--shard ${spec}: I/N with 1 <= I <= N`);
  return { index, count };
}

/**
 * Shard index of N: whole groups (every pair that indexes one image), so each image is indexed in
 * one shard only; groups go, largest first, to the shard with the fewest pairs so far (ties to the
 * lowest shard): every shard computes the same split, and together they hold every pair once.
 */
export function shardPairs(pairs: Pair[], index: number, count: number): Pair[] {
  const groups = groupByIndex(pairs);
  const order = groups.map((_, i) => i).sort((x, y) => groups[y].bs.length - groups[x].bs.length || x - y);
  const load = new Array<number>(count).fill(0);
  const mine = new Set<string>();
  for (const g of order) {
    let s = 0;
    for (let t = 1; t < count; t++) if (load[t] < load[s]) s = t;
    load[s] += groups[g].bs.length;
    if (s === index - 1) mine.add(groups[g].a);
  }
  return pairs.filter((p) => mine.has(p.a));
}
