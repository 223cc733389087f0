// The agent's Prometheus metrics (prom-client), on a registry of its own: several agents may run
// in one process (tests), and each serves only its own numbers.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PowerSample } from './energy.js';
import { LATENCY_BOUNDS_NS } from '../target/shared-state.js';
import type { LatencySummary } from '../target/worker.js';

export type Role = 'source' | 'destination';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly started = new Counter({ name: 'postcopy_migrations_started_total', help: 'Migrations started, by the role this agent played', labelNames: ['role'], registers: [this.registry] });
  readonly succeeded = new Counter({ name: 'postcopy_migrations_succeeded_total', help: 'Migrations that ended with the restored task running alone', labelNames: ['role'], registers: [this.registry] });
  readonly failed = new Counter({ name: 'postcopy_migrations_failed_total', help: 'Migrations that failed, by the first failure\'s code', labelNames: ['role', 'code'], registers: [this.registry] });
  readonly faulted = new Counter({ name: 'postcopy_pages_faulted_total', help: 'Pages fetched because a restored task faulted on them (destination)', registers: [this.registry] });
  readonly pushed = new Counter({ name: 'postcopy_pages_pushed_total', help: 'Pages brought by the background push (destination)', registers: [this.registry] });
  readonly bytes = new Counter({ name: 'postcopy_bytes_sent_total', help: 'Bytes of pages sent by this agent\'s page servers (source)', registers: [this.registry] });
  readonly migrationEnergy = new Counter({ name: 'postcopy_migration_energy_joules_total', help: 'Energy that migrations made for a planner cost, J, priced as the planner priced its forecast (source)', registers: [this.registry] });
  readonly imageBytes = new Counter({ name: 'postcopy_image_bytes_total', help: 'Bytes of CRIU images sent or received', labelNames: ['role'], registers: [this.registry] });
  readonly faultLatency = new Histogram({
    name: 'postcopy_fault_latency_seconds',
    help: 'Time from a restored task\'s page fault to its page installed (destination)',
    buckets: LATENCY_BOUNDS_NS.map((ns) => ns / 1e9),
    registers: [this.registry],
  });
  readonly downtime = new Histogram({ name: 'postcopy_downtime_seconds', help: 'From the freeze to the restored task running (source)', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly allPresent = new Histogram({ name: 'postcopy_all_present_seconds', help: 'From the freeze to every page on the destination (source)', buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'postcopy_agent_' });
  }

  /**
   * The host's power and each running container's share, sampled at each scrape (the host's from
   * the previous scrape to this one; a container's CPU over half a second).
   */
  reportPower(sample: () => Promise<PowerSample | null>): void {
    let latest: Promise<PowerSample | null> | null = null;
    // One sample serves both gauges of a scrape.
    const once = () => (latest ??= sample().catch(() => null).finally(() => setTimeout(() => (latest = null), 1000).unref()));
    new Gauge({
      name: 'postcopy_host_power_watts',
      help: "What this host draws, W: measured by RAPL (source=rapl), or its class's power model at its CPU load (source=model)",
      labelNames: ['source'],
      registers: [this.registry],
      async collect() {
        const s = await once();
        this.reset();
        if (s) this.set({ source: s.source }, Math.round(s.hostW * 100) / 100);
      },
    });
    new Gauge({
      name: 'postcopy_container_power_watts',
      help: "A running container's share of the host's power, W: the host's power times the container's share of the host's busy CPU time",
      labelNames: ['container'],
      registers: [this.registry],
      async collect() {
        const s = await once();
        this.reset();
        for (const c of s?.containers ?? []) this.set({ container: c.id }, Math.round(c.watts * 100) / 100);
      },
    });
  }

  /**
   * A task's fault latencies, from its handler's summary: its faults are placed in the buckets as
   * the handler's histogram had them (at its percentile points), each observed at its bucket's bound.
   */
  observeFaults(latency: LatencySummary | null | undefined): void {
    if (!latency?.buckets || latency.buckets.length !== LATENCY_BOUNDS_NS.length) return;
    let before = 0;
    for (const [i, cumulative] of latency.buckets.entries()) {
      const n = Math.min(cumulative - before, 1_000_000);
      for (let k = 0; k < n; k++) this.faultLatency.observe(LATENCY_BOUNDS_NS[i] / 1e9);
      before = Math.max(before, cumulative);
    }
    // those past the last bound (or that the percentile points could not place)
    for (let k = 0; k < Math.min(latency.count - before, 1_000_000); k++) this.faultLatency.observe(latency.maxNs / 1e9);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
