// Compiles wasm/kernel.c to build/kernel.wasm with clang-14 (installs clang-14 and lld-14 from
// Debian the first time, as root). Skips the compile when the output is newer than the source.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'wasm', 'kernel.c');
const out = join(root, 'build', 'kernel.wasm');

if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
if (!has('clang-14') || !has('wasm-ld-14')) {
  if (process.getuid?.() !== 0) {
    console.error('tiematch: clang-14 and lld-14 are needed to build the WebAssembly kernel: apt-get install clang-14 lld-14 (as root)');
    process.exit(1);
  }
  console.error('tiematch: installing clang-14 and lld-14 (first build only)');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', '-qq', 'clang-14', 'lld-14'], { stdio: 'inherit', env }).status === 0;
  if (!install()) {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    if (!install()) {
      console.error('tiematch: apt-get install clang-14 lld-14 failed');
      process.exit(1);
    }
  }
}
mkdirSync(dirname(out), { recursive: true });
execFileSync('clang-14', [
  '--target=wasm32', '-O3', '-msimd128', '-nostdlib', '-fno-builtin',
  '-Wl,--no-entry', '-Wl,--import-memory', '-Wl,--export=__heap_base', '-Wl,-z,stack-size=65536',
  '-Wall', '-Werror', '-o', out, src,
], { stdio: 'inherit' });
