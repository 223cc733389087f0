// tiematch's public API: the explicit list of what other tools may use.
export { TiematchError, type TiematchErrorCode } from './errors.js';
export { parseKeypoints, serializeKeypoints, DetectType, DESCRIPTOR_SIZE, type Keypoints, type KeypointFileInfo } from './format/dat.js';
export { parseResult, serializeResult, formatG, type MatchCoordinates } from './format/result.js';
export { nearestTwo, type NeighbourResult, type SearchOptions, type SearchMode } from './engine/search.js';
export { annMatch, ratioTest, referenceNearestTwo, verify, DEFAULT_RATIO, type AnnOptions, type AnnResult, type Verification } from './ann.js';
export { neighbourFilter, neighbourFilterPass } from './filter.js';
export { readKeypointFile, writeResultFile } from './files.js';
export { syntheticPair } from './synthetic.js';
export { runBatch, parseBytes, DEFAULT_MEMORY, type BatchOptions, type BatchSummary, type PairError } from './batch/batch.js';
export { parsePairList, parseSelection, parseShard, shardPairs, keypointPath, resultPath, type Pair, type PairSelection } from './batch/pairs.js';
