// Every parser fed by a peer, fuzzed with a bounded number of cases (scripts/fuzz.ts runs the long version).
import { describe, it } from 'node:test';
import { fuzzTargets, runFuzzTarget } from './helpers/fuzz.js';

describe('fuzzed parsers end in a clear error, never a crash, a hang or a leak', () => {
  for (const target of fuzzTargets) it(`${target.name} (${target.runs.test} cases)`, () => runFuzzTarget(target, target.runs.test).then(() => undefined));
});
