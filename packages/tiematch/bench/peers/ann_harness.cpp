// MICMAC's Ann (CPP_Ann.cpp, AnnSearcher.cpp) on Debian's libann: kd-tree on file1 (bucket 1,
// sliding midpoint), annkPriSearch k=2 eps 0 with a visit cap, ratio test, the neighbour filter
// twice, .result written as MICMAC writes it. --threads N forks N processes over the queries
// (ANN's search keeps global state); --max-visit 0 removes the cap (exact).
#include <ANN/ANN.h>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

static std::vector<int> filter_pass(const std::vector<double> &x1, const std::vector<double> &y1,
                                    const std::vector<double> &x2, const std::vector<double> &y2) {
  const int n = (int)x1.size();
  auto slots = [&](const std::vector<double> &x, const std::vector<double> &y) {
    std::vector<std::vector<int>> out(n, std::vector<int>(9, 0));
    ANNpointArray pts = annAllocPts(n, 2);
    for (int i = 0; i < n; i++) { pts[i][0] = x[i]; pts[i][1] = y[i]; }
    ANNkd_tree tree(pts, n, 2);
    annMaxPtsVisit(200);
    const int k = std::min(9, n);
    ANNidx idx[9];
    ANNdist dist[9];
    for (int i = 0; i < n; i++) {
      tree.annkPriSearch(pts[i], k, idx, dist, 0.);
      int s = 0;
      for (int r = 0; r < k; r++)
        if (idx[r] != i) out[i][s++] = idx[r];
    }
    annDeallocPts(pts);
    return out;
  };
  auto a = slots(x1, y1), b = slots(x2, y2);
  std::vector<int> kept;
  for (int i = 0; i < n; i++) {
    int common = 0;
    for (int v : a[i])
      if (std::find(b[i].begin(), b[i].end(), v) != b[i].end()) common++;
    if (common > 0.5 * 9) kept.push_back(i);
  }
  return kept;
}

int main(int argc, char **argv) {
  Args args = parse_args(argc, argv);
  Points p1 = read_v0(args.file1), p2 = read_v0(args.file2);
  const double t0 = now_ms();
  ANNpointArray data = annAllocPts(p1.n, 128);
  for (size_t i = 0; i < (size_t)p1.n * 128; i++) data[i / 128][i % 128] = p1.desc[i] / 512.0;
  ANNkd_tree tree(data, p1.n, 128);
  const double t1 = now_ms();
  // Per query: nearest index, d1, d2, in memory the forked searchers share.
  const size_t nq = p2.n;
  auto *nn = (int32_t *)mmap(nullptr, nq * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto *dd = (double *)mmap(nullptr, nq * 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  std::vector<pid_t> kids;
  for (int t = 0; t < args.threads; t++) {
    pid_t pid = t + 1 < args.threads ? fork() : 0;
    if (pid > 0) { kids.push_back(pid); continue; }
    annMaxPtsVisit(args.maxVisit);
    ANNpoint q = annAllocPt(128);
    ANNidx idx[2];
    ANNdist dist[2];
    for (size_t i = nq * t / args.threads; i < nq * (t + 1) / args.threads; i++) {
      for (int d = 0; d < 128; d++) q[d] = p2.desc[i * 128 + d] / 512.0;
      tree.annkPriSearch(q, 2, idx, dist, 0.);
      nn[i] = idx[0];
      dd[2 * i] = dist[0];
      dd[2 * i + 1] = dist[1];
    }
    if (t + 1 < args.threads) _exit(0);
    break;
  }
  for (pid_t k : kids) waitpid(k, nullptr, 0);
  const double t2 = now_ms();
  const double R = (double)args.ratio * (double)args.ratio;
  std::vector<int32_t> pairs;
  std::vector<int> m1, m2;
  for (size_t i = 0; i < nq; i++)
    if (dd[2 * i] < R * dd[2 * i + 1]) {
      pairs.push_back((int32_t)i);
      pairs.push_back(nn[i]);
      m1.push_back(nn[i]);
      m2.push_back((int)i);
    }
  const size_t ratioMatches = m1.size();
  for (int pass = 0; pass < 2 && !m1.empty(); pass++) {
    std::vector<double> x1, y1, x2, y2;
    for (size_t m = 0; m < m1.size(); m++) {
      x1.push_back(p1.x[m1[m]]); y1.push_back(p1.y[m1[m]]);
      x2.push_back(p2.x[m2[m]]); y2.push_back(p2.y[m2[m]]);
    }
    std::vector<int> kept = filter_pass(x1, y1, x2, y2), k1, k2;
    for (int k : kept) { k1.push_back(m1[k]); k2.push_back(m2[k]); }
    m1.swap(k1);
    m2.swap(k2);
  }
  const double t3 = now_ms();
  if (args.result) {
    std::ofstream f(args.result, std::ios::binary);
    if (args.newFormat) {
      const char mark = (char)0xBA, msbf = 0, pad[3] = {0, 0, 0};
      const uint32_t magic = 1452550588u, version = 1, count = (uint32_t)m1.size();
      f.write(&mark, 1); f.write(&msbf, 1); f.write(pad, 3);
      f.write((const char *)&magic, 4); f.write((const char *)&version, 4); f.write((const char *)&count, 4);
      for (size_t m = 0; m < m1.size(); m++) {
        double v[4] = {(double)p1.x[m1[m]], (double)p1.y[m1[m]], (double)p2.x[m2[m]], (double)p2.y[m2[m]]};
        f.write((const char *)v, 32);
      }
    } else {
      for (size_t m = 0; m < m1.size(); m++)
        f << (double)p1.x[m1[m]] << ' ' << (double)p1.y[m1[m]] << ' ' << (double)p2.x[m2[m]] << ' ' << (double)p2.y[m2[m]] << std::endl;
    }
  }
  write_pairs(args.pairs, pairs);
  printf("{\"build_ms\":%.3f,\"query_ms\":%.3f,\"filter_ms\":%.3f,\"total_ms\":%.3f,\"ratio_matches\":%zu,\"matches\":%zu}\n",
         t1 - t0, t2 - t1, t3 - t2, t2 - t0, ratioMatches, m1.size());
  annDeallocPts(data);
  annClose();
  return 0;
}
