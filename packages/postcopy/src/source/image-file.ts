// A raw memory image file as a memory source: one region whose bytes are the file's.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { PostcopyError } from '../errors.js';
import type { RegionInfo } from '../protocol/frames.js';
import type { MemorySource } from './memory-source.js';
import type { SourceSpec } from './spec.js';

export interface ImageFileOptions {
  pageSize?: number;
  /** address the region claims on the source; the target maps it wherever it likes */
  base?: number;
}

export class ImageFileSource implements MemorySource {
  readonly pageSize: number;
  readonly regions: RegionInfo[];
  #fd: number;
  #size: number;
  #path: string;

  constructor(path: string, options: ImageFileOptions = {}) {
    this.pageSize = options.pageSize ?? 4096;
    this.#path = path;
    this.#fd = openSync(path, 'r');
    this.#size = fstatSync(this.#fd).size;
    if (this.#size === 0) {
      closeSync(this.#fd);
      throw new PostcopyError('ERR_INVALID_ARG', `image ${path} is empty`);
    }
    const length = Math.ceil(this.#size / this.pageSize) * this.pageSize;
    this.regions = [{ id: 0, flags: 0, start: options.base ?? 0, length }];
  }

  read(region: RegionInfo, firstPage: number, count: number, buf: Uint8Array, offset: number): void {
    const pos = firstPage * this.pageSize;
    const len = count * this.pageSize;
    let done = 0;
    while (done < len && pos + done < this.#size) {
      const n = readSync(this.#fd, buf, offset + done, len - done, pos + done);
      if (n === 0) break;
      done += n;
    }
    buf.fill(0, offset + done, offset + len); // the tail past EOF reads as zeros
  }

  describe(): SourceSpec {
    return { kind: 'file', path: this.#path, pageSize: this.pageSize, base: this.regions[0].start };
  }

  untouched(): boolean {
    return false;
  }

  close(): void {
    closeSync(this.#fd);
  }
}
