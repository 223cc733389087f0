// Authentication with a per-migration pre-shared key, for the plain transports. Both ends prove
// they hold the key without sending it: HMAC-SHA256 over both nonces, the key id and a role label,
// so a proof can be neither replayed on another connection nor reflected to the other side.
//   target HELLO auth: nonceT (32) ‖ keyId (UTF-8, at most 64 bytes)
//   source HELLO auth: nonceS (32) ‖ proof of the source (32)
//   target AUTH frame: proof of the target (32); the source sends REGIONS only after it checks out
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { PostcopyError } from '../errors.js';

export const NONCE_SIZE = 32;
export const MAX_KEY_ID = 64;
const MIN_KEY = 16;

/** A pre-shared key, named so that a source holding several can tell which one a target means. */
export interface PresharedKey {
  keyId: string;
  key: Uint8Array;
}

export function checkKey(k: PresharedKey): void {
  if (k.key.length < MIN_KEY) throw new PostcopyError('ERR_INVALID_ARG', `a key must have at least ${MIN_KEY} bytes, not ${k.key.length}`);
  if (Buffer.byteLength(k.keyId) > MAX_KEY_ID || k.keyId.length === 0) throw new PostcopyError('ERR_INVALID_ARG', `a key id has 1 to ${MAX_KEY_ID} bytes`);
}

export const newNonce = (): Buffer => randomBytes(NONCE_SIZE);

export function proof(role: 'source' | 'target', k: PresharedKey, nonceTarget: Uint8Array, nonceSource: Uint8Array): Buffer {
  return createHmac('sha256', k.key).update(`postcopy ${role}\0${k.keyId}\0`).update(nonceTarget).update(nonceSource).digest();
}

export function proofMatches(expected: Buffer, got: Uint8Array): boolean {
  return got.length === expected.length && timingSafeEqual(expected, got);
}

export function targetHelloAuth(k: PresharedKey, nonceTarget: Uint8Array): Buffer {
  return Buffer.concat([nonceTarget, Buffer.from(k.keyId, 'utf8')]);
}

/** nonceT and key id from a target's HELLO auth field, or null when it carries none. */
export function parseTargetHelloAuth(auth: Uint8Array): { nonce: Uint8Array; keyId: string } | null {
  if (auth.length <= NONCE_SIZE || auth.length > NONCE_SIZE + MAX_KEY_ID) return null;
  return { nonce: auth.subarray(0, NONCE_SIZE), keyId: Buffer.from(auth.subarray(NONCE_SIZE)).toString('utf8') };
}

/** Reads a key file: hex text (64+ hex digits), or raw bytes. */
export function parseKeyFile(bytes: Buffer): Uint8Array {
  const text = bytes.toString('utf8').trim();
  return /^[0-9a-fA-F]{32,}$/.test(text) && text.length % 2 === 0 ? Buffer.from(text, 'hex') : bytes;
}
