import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { allPairs, groupByIndex, linePairs, parsePairList, parseSelection, parseShard, shardPairs } from '../src/batch/pairs.js';
import { LruCache } from '../src/batch/lru.js';
import { largestScales, parseBytes } from '../src/batch/batch.js';
import { syntheticPair } from '../src/index.js';

describe('pair selection', () => {
  it('All and Line:N as Tapioca takes them', () => {
    const im = ['a', 'b', 'c', 'd'];
    assert.equal(allPairs(im).length, 12);
    assert.deepEqual(linePairs(im, 1).map((p) => p.a + p.b), ['ab', 'ba', 'bc', 'cb', 'cd', 'dc']);
    assert.equal(linePairs(im, 9).length, 12);
  });

  it('SauvegardeNamedRel: ordered pairs, comments and duplicates dropped, entities read', () => {
    const xml = '<?xml version="1.0" ?>\n<SauvegardeNamedRel>\n<!-- <Cple>x y</Cple> -->\n\t<Cple>A.tif B.tif</Cple>\n<Cple> B.tif   A.tif </Cple><Cple>A.tif B.tif</Cple><Cple>R&amp;D.tif A.tif</Cple></SauvegardeNamedRel>';
    assert.deepEqual(parsePairList(xml, 'p.xml'), [{ a: 'A.tif', b: 'B.tif' }, { a: 'B.tif', b: 'A.tif' }, { a: 'R&D.tif', b: 'A.tif' }]);
    assert.throws(() => parsePairList('<Pairs/>', 'p.xml'), { code: 'ERR_PAIR_LIST', message: /p\.xml/ });
    assert.throws(() => parsePairList('<SauvegardeNamedRel><Cple>A</Cple></SauvegardeNamedRel>', 'p.xml'), { code: 'ERR_PAIR_LIST' });
  });

  it('--pairs, --shard and --memory are checked', () => {
    assert.deepEqual(parseSelection('Line:3'), { mode: 'Line', n: 3 });
    assert.deepEqual(parseSelection('File:x:y.xml'), { mode: 'File', path: 'x:y.xml' });
    assert.deepEqual(parseSelection('MulScale:40'), { mode: 'MulScale', k: 40 });
    for (const bad of ['all', 'Line', 'Line:0', 'Line:x', 'MulScale:', 'File:']) assert.throws(() => parseSelection(bad), { code: 'ERR_INVALID_ARG' }, bad);
    assert.deepEqual(parseShard('2/4'), { index: 2, count: 4 });
    for (const bad of ['0/4', '5/4', '1', 'a/b']) assert.throws(() => parseShard(bad), { code: 'ERR_INVALID_ARG' }, bad);
    assert.equal(parseBytes('2G'), 2 * 2 ** 30);
    assert.equal(parseBytes('512MiB'), 512 * 2 ** 20);
    assert.throws(() => parseBytes('lots'), { code: 'ERR_INVALID_ARG' });
  });

  it('shards are disjoint, cover every pair, keep each image\'s pairs together and are balanced', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 3 }), (n, count, line) => {
        const images = Array.from({ length: n }, (_, i) => `im${String(i).padStart(2, '0')}`);
        const pairs = line ? linePairs(images, line) : allPairs(images);
        const shards = Array.from({ length: count }, (_, i) => shardPairs(pairs, i + 1, count));
        const keys = shards.flat().map((p) => `${p.a} ${p.b}`);
        assert.equal(new Set(keys).size, keys.length);
        assert.deepEqual(keys.sort(), pairs.map((p) => `${p.a} ${p.b}`).sort());
        const owner = new Map<string, number>();
        shards.forEach((s, i) => s.forEach((p) => assert.equal(owner.get(p.a) ?? (owner.set(p.a, i), i), i)));
        const biggest = Math.max(...groupByIndex(pairs).map((g) => g.bs.length), 0);
        const sizes = shards.map((s) => s.length);
        assert.ok(Math.max(...sizes) - Math.min(...sizes) <= biggest, `sizes ${sizes}`);
      }),
    );
  });
});

describe('batch helpers', () => {
  it('the LRU drops the least recently used past its budget, never the newest', () => {
    const c = new LruCache<number>(10);
    c.set('a', 1, 4);
    c.set('b', 2, 4);
    assert.equal(c.get('a'), 1);
    c.set('c', 3, 4);
    assert.equal(c.get('b'), undefined);
    assert.equal(c.get('a'), 1);
    c.set('big', 4, 50);
    assert.deepEqual([c.size, c.get('big'), c.bytes], [1, 4, 50]);
  });

  it('MulScale\'s first pass keeps the largest scales, in file order', () => {
    const { a } = syntheticPair(50, 1, 3);
    const low = largestScales(a, 10);
    assert.equal(low.count, 10);
    const cut = [...a.scale].sort((x, y) => y - x)[9];
    assert.ok([...low.scale].every((s) => s >= cut));
    const at = [...low.x].map((x) => a.x.indexOf(x));
    assert.deepEqual(at, [...at].sort((x, y) => x - y));
    assert.deepEqual(low.descriptors.subarray(0, 128), a.descriptors.subarray(at[0] * 128, at[0] * 128 + 128));
  });
});
