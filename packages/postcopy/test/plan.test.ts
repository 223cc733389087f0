// The energy planner: properties of plan() on random racks (fast-check), the simulator's
// determinism and its figures on a small seeded rack, and bad input refused with a code.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ARM_LOW_POWER, checkHostClass, DEFAULT_COSTS, XEON_D_M510, curveW, hostW } from '../src/util/power-model.js';
import { countClasses, powerLowerBoundW } from '../src/plan/bound.js';
import { plan, type PlanHost, type PlanInput, type RecentMove } from '../src/plan/planner.js';
import { parseTrace, simulate } from '../src/plan/simulate.js';

const classes = { [XEON_D_M510.name]: XEON_D_M510, [ARM_LOW_POWER.name]: ARM_LOW_POWER };

/** A random rack: hosts of both classes, some asleep, containers within each host's memory. */
const rackArb: fc.Arbitrary<PlanInput> = fc
  .tuple(
    fc.array(
      fc.record({
        cls: fc.constantFrom(XEON_D_M510.name, ARM_LOW_POWER.name),
        asleep: fc.boolean(),
        containers: fc.array(fc.record({ cpu: fc.double({ min: 0, max: 6, noNaN: true }), memGiB: fc.double({ min: 0.1, max: 6, noNaN: true }) }), { maxLength: 6 }),
      }),
      { minLength: 1, maxLength: 10 },
    ),
    fc.integer({ min: 0, max: 12 }),
    fc.constantFrom(600, 3600, 7200),
    fc.array(fc.tuple(fc.nat(40), fc.nat(10), fc.nat(10), fc.nat(7200)), { maxLength: 10 }),
  )
  .map(([hs, maxMoves, horizonS, recent]) => {
    let n = 0;
    const hosts: PlanHost[] = hs.map((h, i) => ({
      id: `h${i}`,
      cls: h.cls,
      asleep: h.asleep && h.containers.length === 0,
      containers: h.containers.map((c) => ({ id: `c${n++}`, ...c })),
    }));
    const moves: RecentMove[] = recent.map(([c, f, t, at]) => ({ container: `c${c}`, from: `h${f % hosts.length}`, to: `h${t % hosts.length}`, atS: 10_000 - at }));
    return { hosts, classes, nowS: 10_000, horizonS, slaCpu: 0.8, maxMoves, recent: moves, costs: DEFAULT_COSTS };
  });

/** The rack after the moves: each host's CPU and memory. */
function after(input: PlanInput, moves: ReturnType<typeof plan>): Map<string, { cpu: number; mem: number }> {
  const where = new Map<string, string>();
  const size = new Map<string, { cpu: number; mem: number }>();
  for (const h of input.hosts) for (const c of h.containers) (where.set(c.id, h.id), size.set(c.id, { cpu: c.cpu, mem: c.memGiB }));
  for (const m of moves) where.set(m.container, m.to);
  const load = new Map(input.hosts.map((h) => [h.id, { cpu: 0, mem: 0 }]));
  for (const [c, h] of where) {
    load.get(h)!.cpu += size.get(c)!.cpu;
    load.get(h)!.mem += size.get(c)!.mem;
  }
  return load;
}

describe('the planner', () => {
  it('never sends a host over its CPU ceiling or its memory', () => {
    fc.assert(
      fc.property(rackArb, (input) => {
        const moves = plan(input);
        const load = after(input, moves);
        for (const to of new Set(moves.map((m) => m.to))) {
          const cls = classes[input.hosts.find((h) => h.id === to)!.cls];
          assert.ok(load.get(to)!.cpu <= input.slaCpu * cls.threads + 1e-6, `host ${to}: ${load.get(to)!.cpu} threads`);
          assert.ok(load.get(to)!.mem <= cls.memGiB + 1e-6, `host ${to}: ${load.get(to)!.mem} GiB`);
          assert.ok(!input.hosts.find((h) => h.id === to)!.asleep, 'no move to a sleeping host');
        }
        assert.ok(moves.length <= input.maxMoves);
      }),
      { numRuns: 400 },
    );
  });

  it('never proposes a move whose forecast gain is below its cost', () => {
    fc.assert(fc.property(rackArb, (input) => plan(input).every((m) => m.gainJ > m.costJ && m.costJ > 0)), { numRuns: 400 });
  });

  it('gives the same moves for the same rack', () => {
    fc.assert(fc.property(rackArb, (input) => assert.deepEqual(plan(input), plan(structuredClone(input)))), { numRuns: 200 });
  });

  it('never sends a container back to a host it left within the horizon', () => {
    fc.assert(
      fc.property(rackArb, (input) => {
        for (const m of plan(input)) assert.ok(!input.recent.some((r) => r.container === m.container && r.from === m.to && input.nowS - r.atS < input.horizonS), JSON.stringify(m));
      }),
      { numRuns: 400 },
    );
  });

  it('empties a lightly loaded host into a busier one, and lets it sleep', () => {
    const input: PlanInput = {
      hosts: [
        { id: 'busy', cls: XEON_D_M510.name, asleep: false, containers: [{ id: 'a', cpu: 12, memGiB: 8 }] },
        { id: 'light', cls: XEON_D_M510.name, asleep: false, containers: [{ id: 'b', cpu: 1, memGiB: 2 }] },
      ],
      classes, nowS: 0, horizonS: 3600, slaCpu: 0.8, maxMoves: 4, recent: [], costs: DEFAULT_COSTS,
    };
    const moves = plan(input);
    assert.deepEqual(moves.map((m) => [m.container, m.from, m.to, m.reason]), [['b', 'light', 'busy', 'empty-host']]);
    assert.ok(moves[0].gainJ > 100_000, `an idle m510 host is 67 W: ${moves[0].gainJ} J over an hour`);
  });
});

describe('rack simulate', () => {
  it('is the same for the same seed, and the planner spends less than no migration and the threshold heuristic, with no more SLA violation', () => {
    const a = simulate({ hosts: 12, hours: 24, seed: 7 });
    assert.deepEqual(a, simulate({ hosts: 12, hours: 24, seed: 7 }));
    const s = Object.fromEntries(a.strategies.map((x) => [x.name, x]));
    assert.ok(s.planner.energy_kwh < s.none.energy_kwh, JSON.stringify(a.strategies));
    assert.ok(s.planner.energy_kwh < s.threshold.energy_kwh, JSON.stringify(a.strategies));
    assert.ok(s.planner.sla_violation_minutes <= s.threshold.sla_violation_minutes, JSON.stringify(a.strategies));
    assert.ok(s.planner.migration_kwh > 0 && s.planner.migration_kwh < 0.01 * s.planner.energy_kwh, 'migration energy is counted, and is under 1%');
    assert.equal(s.none.migrations, 0);
  });

  it('follows the day of a trace: a container arrives, grows, and leaves', () => {
    const trace = parseTrace('time,container,cpu,mem\n0,web,1,2\n3600,web,20,2\n7200,web,0,0\n');
    const r = simulate({ hosts: 2, hours: 3, seed: 1, trace });
    const none = r.series.asleep.none;
    assert.equal(none[0], 1, 'one host awake for one container');
    assert.equal(none[none.length - 1], 2, 'both asleep once it left');
  });
});

describe("the lower bound on a rack's power", () => {
  it('is never above what a placement within the ceiling draws', () => {
    fc.assert(
      fc.property(rackArb, fc.constantFrom(1, 0.8), (input, ceiling) => {
        const load = input.hosts.map((h) => ({ cls: classes[h.cls], asleep: h.asleep, cpu: h.containers.reduce((n, c) => n + c.cpu, 0), mem: h.containers.reduce((n, c) => n + c.memGiB, 0) }));
        fc.pre(load.every((h) => h.cpu <= ceiling * h.cls.threads && h.mem <= h.cls.memGiB));
        const drawn = load.reduce((n, h) => n + (h.asleep ? h.cls.sleepW : hostW(h.cls, h.cpu, h.mem)), 0);
        const bound = powerLowerBoundW(countClasses(load.map((h) => h.cls)), load.reduce((n, h) => n + h.cpu, 0), load.reduce((n, h) => n + h.mem, 0), ceiling);
        assert.ok(bound !== null && bound <= drawn + 1e-6, `bound ${bound} W above a placement's ${drawn} W`);
      }),
      { numRuns: 300 },
    );
  });

  it('is every host asleep for no load, and one host awake, on the chord, for one container', () => {
    const rack = countClasses([XEON_D_M510, XEON_D_M510, ARM_LOW_POWER]);
    assert.equal(powerLowerBoundW(rack, 0, 0), 2 * XEON_D_M510.sleepW + ARM_LOW_POWER.sleepW);
    // 8 threads and 12 GiB fit the ARM board (8 threads, 16 GiB): 10 + 26 W awake, both m510s asleep
    assert.equal(powerLowerBoundW(rack, 8, 12), ARM_LOW_POWER.chassisW + 26 + 2 * XEON_D_M510.sleepW);
    // without it, one m510 on its chord: 40 + 27 + 8 × 82/32 W, the other asleep
    const m510 = powerLowerBoundW(countClasses([XEON_D_M510, XEON_D_M510]), 8, 12)!;
    assert.ok(Math.abs(m510 - (40 + 27 + (8 * 82) / 32 + 6)) < 1e-9, `${m510} W`);
  });

  it("lies under every strategy of a simulated day, the SLA's bound under those that keep the SLA", () => {
    for (const seed of [1, 2]) {
      const r = simulate({ hosts: 12, hours: 24, seed });
      assert.ok(r.bound, 'two classes: a bound is given');
      assert.ok(r.bound.any.energy_kwh <= r.bound.sla.energy_kwh, JSON.stringify(r.bound));
      for (const s of r.strategies) {
        assert.ok(r.bound.any.energy_kwh <= s.energy_kwh, `${s.name}: ${s.energy_kwh} kWh under the bound ${r.bound.any.energy_kwh}`);
        if (s.sla_violation_minutes === 0) assert.ok(r.bound.sla.energy_kwh <= s.energy_kwh, `${s.name}: ${s.energy_kwh} kWh under the SLA's bound ${r.bound.sla.energy_kwh}`);
      }
    }
  });
});

describe('bad input to the planner and the simulator', () => {
  const code = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: { code?: string; message?: string }) => e.code === 'ERR_INVALID_ARG' && re.test(e.message ?? ''));
  it('refuses a malformed trace, an unknown host class and negative watts, with ERR_INVALID_ARG', () => {
    code(() => parseTrace(''), /empty/);
    code(() => parseTrace('when,who\n1,a'), /header/);
    code(() => parseTrace('time,container,cpu,mem\n1,a,-2,1'), /line 2/);
    code(() => parseTrace('time,container,cpu,mem\nx,a,1,1'), /line 2/);
    code(() => plan({ hosts: [{ id: 'h', cls: 'quantum', asleep: false, containers: [] }], classes, nowS: 0, horizonS: 60, slaCpu: 0.8, maxMoves: 1, recent: [], costs: DEFAULT_COSTS }), /unknown host class quantum/);
    code(() => checkHostClass({ ...XEON_D_M510, sleepW: -3 }), /sleepW/);
    code(() => checkHostClass({ ...XEON_D_M510, power: [[0, 27], [1, -51]] }), /power point/);
    code(() => checkHostClass({ ...XEON_D_M510, power: [[1, 51], [4, 65]] }), /starts at 0/);
    code(() => simulate({ hosts: 0, hours: 1, seed: 1 }), /--hosts/);
  });

  it('interpolates Table 5: 27 W idle, 51 W with one thread, 109 W with 32', () => {
    assert.equal(curveW(XEON_D_M510, 0), 27);
    assert.equal(curveW(XEON_D_M510, 1), 51);
    assert.equal(curveW(XEON_D_M510, 12), 91);
    assert.equal(curveW(XEON_D_M510, 32), 109);
    assert.equal(curveW(XEON_D_M510, 40), 109, 'clamped to the class\'s threads');
  });
});
