// Two network namespaces joined by a veth pair, made and removed by us (benchmarks, tests).
import { spawnSync } from 'node:child_process';
import { PostcopyError, PrivilegeError } from '../errors.js';

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error) throw new PrivilegeError(`cannot run ip(8): ${r.error.message} (install iproute2)`);
  if (r.status !== 0) {
    const msg = `ip ${args.join(' ')}: ${r.stderr.trim()}`;
    if (/Operation not permitted|Permission denied/.test(r.stderr)) throw new PrivilegeError(`${msg} (needs root or CAP_NET_ADMIN)`);
    throw new PostcopyError('ERR_INVALID_ARG', msg);
  }
}

export class VethPair {
  readonly a: { ns: string; dev: string; addr: string };
  readonly b: { ns: string; dev: string; addr: string };
  #alive = true;

  private constructor(tag: string, subnet: string) {
    this.a = { ns: `${tag}-a`, dev: `${tag}a`, addr: `${subnet}.1` };
    this.b = { ns: `${tag}-b`, dev: `${tag}b`, addr: `${subnet}.2` };
  }

  /** tag: a short unique name (at most 14 characters); subnet: three octets, e.g. "10.232.0". */
  static create(tag: string, subnet: string, mtu = 1500): VethPair {
    if (tag.length > 14) throw new PostcopyError('ERR_INVALID_ARG', `veth tag "${tag}" is longer than 14 characters`);
    const pair = new VethPair(tag, subnet);
    try {
      ip(['netns', 'add', pair.a.ns]);
      ip(['netns', 'add', pair.b.ns]);
      ip(['link', 'add', pair.a.dev, 'netns', pair.a.ns, 'type', 'veth', 'peer', 'name', pair.b.dev, 'netns', pair.b.ns]);
      for (const end of [pair.a, pair.b]) {
        ip(['-n', end.ns, 'addr', 'add', `${end.addr}/24`, 'dev', end.dev]);
        ip(['-n', end.ns, 'link', 'set', end.dev, 'up']);
        ip(['-n', end.ns, 'link', 'set', 'lo', 'up']);
      }
      pair.setMtu(mtu);
    } catch (err) {
      pair.destroy();
      throw err;
    }
    return pair;
  }

  setMtu(mtu: number): void {
    for (const end of [this.a, this.b]) ip(['-n', end.ns, 'link', 'set', end.dev, 'mtu', String(mtu)]);
  }

  /** The command prefix that runs a program inside one end's namespace. */
  exec(end: 'a' | 'b'): string[] {
    return ['ip', 'netns', 'exec', this[end].ns];
  }

  /** Removes both namespaces (and with them the veth pair). Safe to call twice. */
  destroy(): void {
    if (!this.#alive) return;
    this.#alive = false;
    for (const ns of [this.a.ns, this.b.ns]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}

/** Several network namespaces on one bridge (a LAN of hosts), made and removed by us (tests). */
export class NetnsLan {
  readonly hosts: { ns: string; dev: string; addr: string }[];
  readonly #switch: string;
  #alive = true;

  private constructor(tag: string, subnet: string, n: number) {
    this.#switch = `${tag}-sw`;
    this.hosts = Array.from({ length: n }, (_, i) => ({ ns: `${tag}-${i}`, dev: `${tag}h${i}`, addr: `${subnet}.${i + 1}` }));
  }

  /** tag: a short unique name (at most 10 characters); subnet: three octets; n: 2 to 200 hosts. */
  static create(tag: string, subnet: string, n: number): NetnsLan {
    if (tag.length > 10) throw new PostcopyError('ERR_INVALID_ARG', `LAN tag "${tag}" is longer than 10 characters`);
    if (!(Number.isInteger(n) && n >= 2 && n <= 200)) throw new PostcopyError('ERR_INVALID_ARG', `a LAN of 2 to 200 hosts, not ${n}`);
    const lan = new NetnsLan(tag, subnet, n);
    try {
      ip(['netns', 'add', lan.#switch]);
      ip(['-n', lan.#switch, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', lan.#switch, 'link', 'set', 'br0', 'up']);
      for (const [i, h] of lan.hosts.entries()) {
        ip(['netns', 'add', h.ns]);
        ip(['link', 'add', h.dev, 'netns', h.ns, 'type', 'veth', 'peer', 'name', `${tag}s${i}`, 'netns', lan.#switch]);
        ip(['-n', lan.#switch, 'link', 'set', `${tag}s${i}`, 'master', 'br0']);
        ip(['-n', lan.#switch, 'link', 'set', `${tag}s${i}`, 'up']);
        ip(['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', h.dev]);
        ip(['-n', h.ns, 'link', 'set', h.dev, 'up']);
        ip(['-n', h.ns, 'link', 'set', 'lo', 'up']);
      }
    } catch (err) {
      lan.destroy();
      throw err;
    }
    return lan;
  }

  /** The command prefix that runs a program on host i. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.hosts[i].ns];
  }

  /** Removes every namespace (and with them the links). Safe to call twice. */
  destroy(): void {
    if (!this.#alive) return;
    this.#alive = false;
    for (const ns of [...this.hosts.map((h) => h.ns), this.#switch]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}
