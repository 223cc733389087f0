// A small error hierarchy with stable codes, in the manner of undici's lib/core/errors.js.
export type ErrorCode =
  | 'ERR_PROTOCOL' // malformed frame, bad magic, unknown type, oversized frame
  | 'ERR_VERSION' // HELLO with a protocol version we do not speak
  | 'ERR_PAGE_SIZE' // peers disagree on the page size, or it is not supported
  | 'ERR_OUT_OF_RANGE' // GET outside any region, or too many pages at once
  | 'ERR_SOURCE_GONE' // the memory source (a process) went away
  | 'ERR_PEER_CLOSED' // the connection closed before the migration completed, for good
  | 'ERR_CONNECTION_LOST' // the connection broke, and a target may resume it (ConnectionLost)
  | 'ERR_PRIVILEGE' // a missing privilege or kernel feature
  | 'ERR_UFFD' // userfaultfd failed in a way that loses the fault
  | 'ERR_TARGET_GONE' // the process whose faults we served has exited: nothing is lost
  | 'ERR_TIMEOUT'
  | 'ERR_INVALID_ARG'
  | 'ERR_CHILD' // a helper process (benchmark side, reference program) failed
  | 'ERR_IMAGE' // a CRIU image is missing or malformed
  | 'ERR_CRIU' // CRIU failed or is not usable here
  | 'ERR_AUTH' // the peer could not prove it holds the migration's key
  | 'ERR_NOT_GRANTED' // a GET for a region or pages outside what this target was granted
  | 'ERR_REMOTE'; // the peer sent an ERROR frame

/** Every code, for telling a peer's code (a string off the wire) from anything else. */
const ERROR_CODES: Record<ErrorCode, true> = {
  ERR_PROTOCOL: true, ERR_VERSION: true, ERR_PAGE_SIZE: true, ERR_OUT_OF_RANGE: true, ERR_SOURCE_GONE: true, ERR_PEER_CLOSED: true, ERR_CONNECTION_LOST: true,
  ERR_PRIVILEGE: true, ERR_UFFD: true, ERR_TARGET_GONE: true, ERR_TIMEOUT: true, ERR_INVALID_ARG: true, ERR_CHILD: true,
  ERR_IMAGE: true, ERR_CRIU: true, ERR_AUTH: true, ERR_NOT_GRANTED: true, ERR_REMOTE: true,
};

export const isErrorCode = (code: unknown): code is ErrorCode => typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);

export class PostcopyError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PostcopyError';
    this.code = code;
  }
}

export class ProtocolError extends PostcopyError {
  constructor(message: string, code: ErrorCode = 'ERR_PROTOCOL') {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

/**
 * The connection broke (EOF without BYE, a reset, a write that failed, no reply in time): a target
 * may resume. A code of its own, so that a thread's report says so: once the target gives up, it is
 * ERR_PEER_CLOSED.
 */
export class ConnectionLost extends PostcopyError {
  constructor(message: string) {
    super('ERR_CONNECTION_LOST', message);
    this.name = 'ConnectionLost';
  }
}

/** An ERROR frame received from the peer, with the peer's stable code. */
export class RemoteError extends PostcopyError {
  readonly remoteCode: ErrorCode;
  readonly remoteMessage: string;
  constructor(remoteCode: ErrorCode, message: string) {
    super('ERR_REMOTE', `peer reported ${remoteCode}: ${message}`);
    this.name = 'RemoteError';
    this.remoteCode = remoteCode;
    this.remoteMessage = message;
  }
}

export class PrivilegeError extends PostcopyError {
  constructor(message: string) {
    super('ERR_PRIVILEGE', message);
    this.name = 'PrivilegeError';
  }
}
