import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { TiematchError } from './errors.js';
import { parseKeypoints, type Keypoints, type KeypointFileInfo } from './format/dat.js';
import { serializeResult, type MatchCoordinates } from './format/result.js';

export function readKeypointFile(path: string): { points: Keypoints; info: KeypointFileInfo } {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new TiematchError('ERR_INPUT', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  return parseKeypoints(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), path);
}

/** Writes under a temporary name in the same folder, then renames: the file is whole or absent. */
export function writeResultFile(path: string, matches: MatchCoordinates, newFormat: boolean): void {
  writeResultBytes(path, serializeResult(matches, newFormat));
}

/** A serialized .result, written as writeResultFile writes it. */
export function writeResultBytes(path: string, bytes: Uint8Array): void {
  const temp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  try {
    writeFileSync(temp, bytes);
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw new TiematchError('ERR_OUTPUT', `cannot write ${path}: ${(e as Error).message}`, { cause: e });
  }
}
