// The Job struct that JS fills and wasm/kernel.c's search reads: the one table of its layout.
// scripts/build-wasm.mjs turns this table into build/job_layout.h, a _Static_assert per field that
// kernel.c includes, so a change on either side that is not made on the other fails the build.

/** ptr: a wasm32 address (u32); i32; f64. */
export type JobFieldType = 'ptr' | 'i32' | 'f64';

export const JOB_OFFSETS = {
  baseIl: { offset: 0, type: 'ptr' },
  baseProjN: { offset: 4, type: 'ptr' },
  baseFull: { offset: 8, type: 'ptr' },
  baseFullN: { offset: 12, type: 'ptr' },
  n: { offset: 16, type: 'i32' },
  nPadded: { offset: 20, type: 'i32' },
  qProj: { offset: 24, type: 'ptr' },
  qProjN: { offset: 28, type: 'ptr' },
  qFull: { offset: 32, type: 'ptr' },
  qFullN: { offset: 36, type: 'ptr' },
  nq: { offset: 40, type: 'i32' },
  scale: { offset: 48, type: 'f64' },
  slack: { offset: 56, type: 'f64' },
  alpha: { offset: 64, type: 'f64' },
  out: { offset: 72, type: 'ptr' },
  survivors: { offset: 76, type: 'i32' },
  baseExt: { offset: 80, type: 'ptr' },
  baseExtN: { offset: 84, type: 'ptr' },
  qExtN: { offset: 88, type: 'ptr' },
  baseIndex: { offset: 92, type: 'ptr' },
  centres: { offset: 96, type: 'ptr' },
  slack2: { offset: 104, type: 'f64' },
  screened: { offset: 112, type: 'i32' },
  centreN: { offset: 116, type: 'ptr' },
  nClusters: { offset: 120, type: 'i32' },
  clusterStart: { offset: 124, type: 'ptr' },
  probes: { offset: 128, type: 'i32' },
  exhaustive: { offset: 132, type: 'i32' },
  ratioBound: { offset: 136, type: 'f64' },
  clusterRadius: { offset: 144, type: 'ptr' },
  nSupers: { offset: 148, type: 'i32' },
  superCentres: { offset: 152, type: 'ptr' },
  superCentreN: { offset: 156, type: 'ptr' },
  superStart: { offset: 160, type: 'ptr' },
  superProbes: { offset: 164, type: 'i32' },
} as const satisfies Record<string, { offset: number; type: JobFieldType }>;

export type JobField = keyof typeof JOB_OFFSETS;

/** sizeof(Job) in kernel.c (asserted there). */
export const JOB_SIZE = 168;

export const JOB_FIELD_BYTES: Record<JobFieldType, number> = { ptr: 4, i32: 4, f64: 8 };

/** Writes the given fields of a Job at view's start. */
export function writeJob(view: DataView, fields: Partial<Record<JobField, number>>): void {
  for (const [name, value] of Object.entries(fields) as [JobField, number][]) {
    const { offset, type } = JOB_OFFSETS[name];
    if (type === 'f64') view.setFloat64(offset, value, true);
    else if (type === 'ptr') view.setUint32(offset, value, true);
    else view.setInt32(offset, value, true);
  }
}

export function readJob(view: DataView, name: JobField): number {
  const { offset, type } = JOB_OFFSETS[name];
  return type === 'f64' ? view.getFloat64(offset, true) : type === 'ptr' ? view.getUint32(offset, true) : view.getInt32(offset, true);
}
