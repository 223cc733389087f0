# faiss IndexFlatL2 (exact, BLAS) on the same job: k=2, ratio test; --threads via OpenMP.
import json, sys, time
import numpy as np
import faiss

def read_v0(path):
    raw = open(path, 'rb').read()
    n, dim = np.frombuffer(raw[:8], '<u4')
    rec = np.frombuffer(raw[8:], dtype=np.dtype([('f', '<f4', 4), ('d', 'u1', 128)]), count=n)
    return rec['d'].astype(np.float32)

args = sys.argv[1:]
opts = {'--threads': '1', '--ratio': '0.6', '--pairs': None}
files = []
i = 0
while i < len(args):
    if args[i] in opts:
        opts[args[i]] = args[i + 1]; i += 2
    else:
        files.append(args[i]); i += 1
a, b = read_v0(files[0]), read_v0(files[1])
faiss.omp_set_num_threads(int(opts['--threads']))
t0 = time.perf_counter()
index = faiss.IndexFlatL2(128)
index.add(a)
t1 = time.perf_counter()
D, I = index.search(b, 2)
t2 = time.perf_counter()
r = float(np.float32(float(opts['--ratio'])))
# faiss computes |a|^2+|b|^2-2ab in float32: round to the integers they are.
d = np.rint(D.astype(np.float64))
keep = d[:, 0] < r * r * d[:, 1]
q = np.nonzero(keep)[0]
if opts['--pairs']:
    np.stack([q, I[q, 0]], axis=1).astype('<i4').tofile(opts['--pairs'])
print(json.dumps({'build_ms': (t1 - t0) * 1e3, 'query_ms': (t2 - t1) * 1e3, 'total_ms': (t2 - t0) * 1e3, 'ratio_matches': int(keep.sum())}))
