// RAPL energy counters (Intel's Running Average Power Limit, /sys/class/powercap): what the CPU
// packages drew, in µJ, counting up and wrapping at max_energy_range_uj. Root only. Where there is
// none (this VM, AMD hosts without the driver, most VMs), the caller falls back on the power model.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Zone {
  path: string;
  maxUj: number;
  lastUj: number;
}

const readNumber = (path: string) => Number(readFileSync(path, 'utf8').trim());

export class RaplReader {
  readonly #zones: Zone[];

  private constructor(zones: Zone[]) {
    this.#zones = zones;
  }

  /**
   * The package zones (intel-rapl:N, not their subzones intel-rapl:N:M, which they already count)
   * under `root`; null where there is none that can be read.
   */
  static open(root = '/sys/class/powercap'): RaplReader | null {
    let names: string[];
    try {
      names = readdirSync(root).filter((n) => /^intel-rapl:\d+$/.test(n));
    } catch {
      return null;
    }
    const zones: Zone[] = [];
    for (const n of names.sort()) {
      try {
        const path = join(root, n);
        zones.push({ path, maxUj: readNumber(join(path, 'max_energy_range_uj')), lastUj: readNumber(join(path, 'energy_uj')) });
      } catch {
        // unreadable (not root): skipped
      }
    }
    return zones.length ? new RaplReader(zones) : null;
  }

  /** Joules drawn by every package since the last call (or since open), counter wraps included. */
  joulesSinceLast(): number {
    let uj = 0;
    for (const z of this.#zones) {
      const now = readNumber(join(z.path, 'energy_uj'));
      uj += now >= z.lastUj ? now - z.lastUj : z.maxUj - z.lastUj + now;
      z.lastUj = now;
    }
    return uj / 1e6;
  }
}
