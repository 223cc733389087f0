// The public API: an explicit list, so internals can change freely.
export { PostcopyError, ProtocolError, RemoteError, PrivilegeError, type ErrorCode } from './errors.js';
export {
  PROTOCOL_VERSION,
  DEFAULT_PAGE_SIZE,
  SUPPORTED_PAGE_SIZES,
  FrameType,
  Flag,
  Feature,
  ByeReason,
  type Frame,
  type RegionInfo,
} from './protocol/frames.js';
export { FrameDecoder } from './protocol/decoder.js';
export { encodeHello, encodeRegions, encodeGet, encodeRunHeader, encodeError, encodeBye } from './protocol/codec.js';
export { TcpTransport, UnixTransport, transportFor, parseEndpoint, formatEndpoint, type Endpoint, type Transport, type Listener } from './transport/index.js';
export type { MemorySource } from './source/memory-source.js';
export { LiveProcessSource, type LiveProcessOptions, type FreezeMethod } from './source/live-process.js';
export { ImageFileSource, type ImageFileOptions } from './source/image-file.js';
export { PageServer, type PageServerOptions, type ServerStats } from './source/server.js';
export { FaultHandler, type FaultHandlerOptions, type Progress, type HandlerReport } from './target/handler.js';
export type { Mapping } from './target/shared-state.js';
export { probeSource } from './target/probe.js';
export { encodeHandoff, decodeHandoff, receiveUffd, acceptOne, acknowledgeUffd } from './target/handoff.js';
export { runDemo, type DemoOptions, type DemoResult } from './demo/demo.js';
export { probeCapabilities, type Capabilities } from './util/preflight.js';
