export * from './frames.js';
export * from './codec.js';
export { FrameDecoder } from './decoder.js';
