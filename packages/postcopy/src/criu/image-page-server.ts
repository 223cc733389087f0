// CRIU's page server over the pages of an images directory, on one end of a socket pair: the local
// mode of `criu lazy-pages` (no --page-server) then runs the same fault path as the remote one.
// The serving is a thread of its own (image-page-server-thread.ts), as blocking as the fault threads.
import type { Worker } from 'node:worker_threads';
import { native } from '../native/index.js';
import { siblingModule, startThread } from '../util/thread.js';
import type { DumpImages } from './image.js';
import { storedPages, type TaskPages } from './image-pages.js';

export interface ImagePageServerConfig {
  fd: number;
  imagesDir: string;
  tasks: [number, TaskPages][];
}

export type ImagePageServerMessage = { type: 'closed'; requests: number } | { type: 'failed'; message: string };

const threadUrl = siblingModule(import.meta.url, 'image-page-server-thread');

export class ImagePageServer {
  /** our end: speak CRIU's page-server protocol on it (CriuPageServerConnection.over) */
  readonly fd: number;
  #worker: Worker;
  #ended: Promise<ImagePageServerMessage>;

  /** Throws ERR_IMAGE, before anything starts, where the images do not hold the lazy pages. */
  constructor(imagesDir: string, dump: DumpImages) {
    const tasks = [...storedPages(dump)];
    const [ours, theirs] = native.socketpair(true);
    this.fd = ours;
    this.#worker = startThread(threadUrl, { fd: theirs, imagesDir, tasks } satisfies ImagePageServerConfig);
    this.#ended = new Promise((resolve) => {
      this.#worker.once('message', (m: ImagePageServerMessage) => resolve(m));
      this.#worker.once('error', (err) => resolve({ type: 'failed', message: err.message }));
      this.#worker.once('exit', () => resolve({ type: 'failed', message: 'the image page server thread ended' }));
    });
  }

  /** Resolves when the thread has ended: after PS_IOV_CLOSE, or once our end is closed. */
  ended(): Promise<ImagePageServerMessage> {
    return this.#ended;
  }
}
