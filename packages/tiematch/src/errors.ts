/** Every error tiematch raises on purpose carries one of these stable codes. */
export type TiematchErrorCode =
  | 'ERR_TRUNCATED' // a keypoint or result file ends early
  | 'ERR_MAGIC' // a versioned header with an unknown magic, byte order or version
  | 'ERR_DIMENSION' // a descriptor size other than 128
  | 'ERR_EMPTY' // no points (or fewer than the search needs)
  | 'ERR_DESCRIPTOR' // a descriptor value the format cannot hold
  | 'ERR_INPUT' // an input file cannot be read
  | 'ERR_OUTPUT' // the output file cannot be written
  | 'ERR_INVALID_ARG' // a bad option
  | 'ERR_KERNEL' // the WebAssembly kernel is missing or failed
  | 'ERR_WORKER' // a worker thread died
  | 'ERR_PEER' // a benchmark peer failed
  | 'ERR_PAIR_LIST' // a pair list (--pairs File:) that cannot be read or is not SauvegardeNamedRel
  | 'ERR_NO_KEYPOINTS'; // an image named in the pair list has no Pastis/LBPp<img>.dat

export class TiematchError extends Error {
  readonly code: TiematchErrorCode;
  constructor(code: TiematchErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TiematchError';
    this.code = code;
  }
}
