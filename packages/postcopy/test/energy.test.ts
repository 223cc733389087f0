// Energy accounting on a host: RAPL's counters where there are some (a powercap tree of files, as the
// kernel lays it out; this VM has none), else the class's power model; a container's share.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HostPower } from '../src/agent/energy.js';
import { RaplReader } from '../src/util/rapl.js';
import { XEON_D_M510 } from '../src/util/power-model.js';

/** A powercap tree: package zones intel-rapl:N (and a subzone, which they already count). */
function powercap(packages: { uj: number; max: number }[]) {
  const root = mkdtempSync(join(tmpdir(), 'pc-powercap-'));
  packages.forEach((p, i) => {
    const zone = join(root, `intel-rapl:${i}`);
    mkdirSync(zone);
    writeFileSync(join(zone, 'energy_uj'), String(p.uj));
    writeFileSync(join(zone, 'max_energy_range_uj'), String(p.max));
    mkdirSync(join(root, `intel-rapl:${i}:0`));
    writeFileSync(join(root, `intel-rapl:${i}:0`, 'energy_uj'), '999999999');
  });
  return { root, set: (i: number, uj: number) => writeFileSync(join(root, `intel-rapl:${i}`, 'energy_uj'), String(uj)) };
}

describe('energy accounting', () => {
  it("reads RAPL's package counters, across a wrap of the counter, and not their subzones twice", () => {
    const p = powercap([{ uj: 1_000_000, max: 262_143_328_850 }, { uj: 262_143_000_000, max: 262_143_328_850 }]);
    try {
      const rapl = RaplReader.open(p.root)!;
      assert.ok(rapl);
      p.set(0, 3_500_000); // 2.5 J
      p.set(1, 1_671_150); // wrapped: 328,850 + 1,671,150 µJ = 2 J
      assert.equal(rapl.joulesSinceLast(), 4.5);
      assert.equal(rapl.joulesSinceLast(), 0);
    } finally {
      rmSync(p.root, { recursive: true, force: true });
    }
  });

  it('finds no RAPL where there is none, and then prices the host by its class', () => {
    assert.equal(RaplReader.open('/nonexistent'), null);
    const power = new HostPower(XEON_D_M510, '/nonexistent');
    const s = power.sample([{ id: 'c1', cpu: 0, memGiB: 1 }]);
    assert.equal(s?.source, 'model');
    assert.ok(s!.hostW >= 27 + XEON_D_M510.chassisW, `${s!.hostW} W`);
    assert.equal(s!.containers[0].watts, 0, 'an idle container has no share');
    assert.equal(new HostPower(null, '/nonexistent').available, false);
  });

  it("takes the host's power from RAPL where it has it, and gives each container its share of the busy CPU", async () => {
    const p = powercap([{ uj: 0, max: 262_143_328_850 }]);
    try {
      const power = new HostPower(XEON_D_M510, p.root);
      // Busy CPU meanwhile, so that the host's busy time is not zero.
      const until = performance.now() + 200;
      while (performance.now() < until);
      p.set(0, 20_000_000); // 20 J in ~0.2 s: ~100 W
      const s = power.sample([{ id: 'busy', cpu: 64, memGiB: 1 }]);
      assert.equal(s?.source, 'rapl');
      assert.ok(s!.hostW > 50 && s!.hostW < 200, `${s!.hostW} W`);
      assert.equal(s!.containers[0].watts, s!.hostW, 'a container at least as busy as the host gets all of it');
    } finally {
      rmSync(p.root, { recursive: true, force: true });
    }
  });
});
