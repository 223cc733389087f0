// FLANN on the same job: 4 randomized kd-trees, 128 checks, k=2, ratio test; --threads via FLANN's cores.
#include <flann/flann.hpp>
#include "common.h"

int main(int argc, char **argv) {
  Args args = parse_args(argc, argv);
  Points p1 = read_v0(args.file1), p2 = read_v0(args.file2);
  std::vector<float> a(p1.desc.begin(), p1.desc.end()), b(p2.desc.begin(), p2.desc.end());
  const double t0 = now_ms();
  flann::Matrix<float> data(a.data(), p1.n, 128), queries(b.data(), p2.n, 128);
  flann::Index<flann::L2<float>> index(data, flann::KDTreeIndexParams(args.trees));
  index.buildIndex();
  const double t1 = now_ms();
  std::vector<size_t> idx((size_t)p2.n * 2);
  std::vector<float> dist((size_t)p2.n * 2);
  flann::Matrix<size_t> mi(idx.data(), p2.n, 2);
  flann::Matrix<float> md(dist.data(), p2.n, 2);
  flann::SearchParams sp(args.checks);
  sp.cores = args.threads;
  index.knnSearch(queries, mi, md, 2, sp);
  const double t2 = now_ms();
  const double R = (double)args.ratio * (double)args.ratio;
  std::vector<int32_t> pairs;
  for (size_t i = 0; i < p2.n; i++)
    if ((double)dist[2 * i] < R * (double)dist[2 * i + 1]) { pairs.push_back((int32_t)i); pairs.push_back((int32_t)idx[2 * i]); }
  write_pairs(args.pairs, pairs);
  printf("{\"build_ms\":%.3f,\"query_ms\":%.3f,\"total_ms\":%.3f,\"ratio_matches\":%zu}\n", t1 - t0, t2 - t1, t2 - t0, pairs.size() / 2);
  return 0;
}
