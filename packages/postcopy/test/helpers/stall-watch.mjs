// Debugging aid (POSTCOPY_TEST_VERBOSE): a thread that, when the main thread's event loop stops
// beating for 3 s, writes the main thread's native stack (gdb) to STALL_FILE.
import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
const { beat, file } = workerData;
let dumped = 0;
for (;;) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
  const since = Date.now() - Number(Atomics.load(beat, 0)) * 1000;
  if (since > 3000 && Date.now() - dumped > 10000) {
    dumped = Date.now();
    let kids = '';
    for (const tid of readdirSync('/proc/self/task')) {
      for (const c of readFileSync(`/proc/self/task/${tid}/children`, 'utf8').split(' ').filter(Boolean)) {
        const read = (f) => { try { return readFileSync(`/proc/${c}/${f}`, 'utf8'); } catch (e) { return String(e); } };
        kids += `child ${c}: ${read('stat').slice(0, 120)}\n${read('stack')}\nwchan ${read('wchan')}\n`;
      }
    }
    const r = spawnSync('gdb', ['-p', String(process.pid), '-batch', '-ex', 'thread apply 1 bt 40'], { encoding: 'utf8', timeout: 20000 });
    appendFileSync(file, `--- stalled ${since} ms\n${kids}\n${r.stdout}\n`);
  }
}
