// The image page server's thread: answers PS_IOV_GET from the pages images, in order, until
// PS_IOV_CLOSE or the end of the connection.
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort } from 'node:worker_threads';
import { native } from '../native/index.js';
import { PS_HEADER_SIZE, PS_IOV_ADD_PRESENT, PS_IOV_CLOSE, PS_IOV_GET, readIov, writeIov } from '../protocol/criu-page-server.js';
import { threadData } from '../util/thread.js';
import { findStored } from './image-pages.js';
import type { ImagePageServerConfig, ImagePageServerMessage } from './image-page-server.js';

const KERNEL_PAGE = 4096;
/** the most pages one answer carries (a GET for more gets fewer, and asks again for the rest) */
const MAX_ANSWER_PAGES = 1024;

const config = threadData<ImagePageServerConfig>();
const post = (m: ImagePageServerMessage) => parentPort!.postMessage(m);

function serve(): number {
  const tasks = new Map(config.tasks);
  const files = new Map<number, number>();
  const head = Buffer.alloc(PS_HEADER_SIZE);
  const pages = Buffer.alloc(MAX_ANSWER_PAGES * KERNEL_PAGE);
  let requests = 0;
  try {
    for (;;) {
      const got = native.readFull(config.fd, head, 0, PS_HEADER_SIZE);
      if (got === 0) return requests; // the other end closed: nothing more to serve
      if (got !== PS_HEADER_SIZE) throw new Error(`a request ended after ${got} of ${PS_HEADER_SIZE} bytes`);
      const iov = readIov(head, 0);
      if (iov.cmd === PS_IOV_CLOSE) {
        native.writeAll(config.fd, Buffer.alloc(4), 0, 4);
        return requests;
      }
      if (iov.cmd !== PS_IOV_GET) throw new Error(`command 0x${iov.cmd.toString(16)} is not one a lazy-pages daemon sends`);
      requests++;
      const task = tasks.get(iov.dstId);
      if (!task) throw new Error(`pages asked for task ${iov.dstId}, which the dump does not hold`);
      const at = findStored(task, iov.vaddr, Math.min(iov.nrPages, MAX_ANSWER_PAGES));
      if (!at || iov.nrPages === 0) throw new Error(`task ${iov.dstId} has no lazy page at 0x${iov.vaddr.toString(16)} in the images`);
      let fd = files.get(task.pagesId);
      if (fd === undefined) {
        fd = openSync(join(config.imagesDir, `pages-${task.pagesId}.img`), 'r');
        files.set(task.pagesId, fd);
      }
      const len = at.nrPages * KERNEL_PAGE;
      for (let done = 0; done < len; ) {
        const n = readSync(fd, pages, done, len - done, at.offset + done);
        if (n === 0) throw new Error(`pages-${task.pagesId}.img ends before byte ${at.offset + len}`);
        done += n;
      }
      writeIov(head, 0, { cmd: PS_IOV_ADD_PRESENT, nrPages: at.nrPages, vaddr: iov.vaddr, dstId: iov.dstId });
      if (native.writeAll(config.fd, head, 0, PS_HEADER_SIZE) !== PS_HEADER_SIZE || native.writeAll(config.fd, pages, 0, len) !== len) return requests; // the reader is gone
    }
  } finally {
    for (const fd of files.values()) closeSync(fd);
    native.close(config.fd);
  }
}

try {
  post({ type: 'closed', requests: serve() });
} catch (err) {
  // Closing our end (above) makes the reader fail, and the handler kill its task: no zeros.
  post({ type: 'failed', message: (err as Error).message });
}
