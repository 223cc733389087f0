// Capability gates: a test that needs root features skips without them, but fails under CI=true.
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { probeCapabilities } from '../../src/util/preflight.js';

export const caps = probeCapabilities();

export function need(t: TestContext, ok: boolean, what: string): boolean {
  if (ok) return true;
  if (process.env.CI === 'true') assert.fail(`missing capability under CI: ${what}`);
  t.skip(`missing capability: ${what}`);
  return false;
}
