// runc containers for tests: the bench's own helpers (src/bench/containers.ts).
export { containerStatus, inRootSync, makeBundle, removeContainer, startContainer } from '../../src/bench/containers.js';
