// Certificates for TLS tests, made with openssl (installed from Debian's packages if missing):
// a CA, a source and a target certificate it signs, and a stranger signed by another CA.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TlsMaterial } from '../../src/transport/tls.js';

function run(cmd: string, args: string[], cwd?: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

function ensureOpenssl(): void {
  if (spawnSync('openssl', ['version']).status === 0) return;
  run('apt-get', ['install', '-y', '-qq', 'openssl']);
}

export interface TestCerts {
  dir: string;
  source: TlsMaterial;
  target: TlsMaterial;
  /** a target whose certificate another CA signed */
  stranger: TlsMaterial;
  files: (who: 'source' | 'target') => { cert: string; key: string; ca: string };
}

export function makeCerts(): TestCerts {
  ensureOpenssl();
  const dir = mkdtempSync(join(tmpdir(), 'pc-certs-'));
  const ca = (name: string) => run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`], dir);
  const leaf = (name: string, by: string) => {
    run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`], dir);
    writeFileSync(join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1\n');
    run('openssl', ['x509', '-req', '-in', `${name}.csr`, '-CA', `${by}.pem`, '-CAkey', `${by}.key`, '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
  };
  ca('ca');
  ca('other-ca');
  leaf('source', 'ca');
  leaf('target', 'ca');
  leaf('stranger', 'other-ca');
  const material = (name: string): TlsMaterial => ({ cert: readFileSync(join(dir, `${name}.pem`)), key: readFileSync(join(dir, `${name}.key`)), ca: readFileSync(join(dir, 'ca.pem')) });
  return {
    dir,
    source: material('source'),
    target: material('target'),
    stranger: material('stranger'),
    files: (who) => ({ cert: join(dir, `${who}.pem`), key: join(dir, `${who}.key`), ca: join(dir, 'ca.pem') }),
  };
}
