export async function runBench(_o: unknown): Promise<void> {
  throw new Error('not yet');
}
