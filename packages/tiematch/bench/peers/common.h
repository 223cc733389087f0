// Shared by the peer harnesses: MICMAC v0 .dat reading, timing, result output.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct Points {
  uint32_t n = 0;
  std::vector<float> x, y;
  std::vector<uint8_t> desc;  // n x 128
};

static Points read_v0(const char *path) {
  Points p;
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  uint32_t head[2];
  if (fread(head, 4, 2, f) != 2 || head[1] != 128) { fprintf(stderr, "%s: not a little-endian v0 .dat\n", path); exit(2); }
  p.n = head[0];
  p.x.resize(p.n); p.y.resize(p.n); p.desc.resize((size_t)p.n * 128);
  for (uint32_t i = 0; i < p.n; i++) {
    float f4[4];
    if (fread(f4, 4, 4, f) != 4 || fread(&p.desc[(size_t)i * 128], 1, 128, f) != 128) { fprintf(stderr, "%s: truncated\n", path); exit(2); }
    p.x[i] = f4[0]; p.y[i] = f4[1];
  }
  fclose(f);
  return p;
}

static double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Args {
  const char *file1 = nullptr, *file2 = nullptr, *pairs = nullptr, *result = nullptr;
  int threads = 1, maxVisit = 200, checks = 128, trees = 4;
  float ratio = 0.6f;
  bool newFormat = false;
};

static Args parse_args(int argc, char **argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string s = argv[i];
    auto next = [&]() { if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", s.c_str()); exit(2); } return argv[++i]; };
    if (s == "--threads") a.threads = atoi(next());
    else if (s == "--ratio") a.ratio = (float)atof(next());
    else if (s == "--max-visit") a.maxVisit = atoi(next());
    else if (s == "--checks") a.checks = atoi(next());
    else if (s == "--trees") a.trees = atoi(next());
    else if (s == "--pairs") a.pairs = next();
    else if (s == "--result") a.result = next();
    else if (s == "--new-format") a.newFormat = true;
    else if (!a.file1) a.file1 = argv[i];
    else if (!a.file2) a.file2 = argv[i];
    else { fprintf(stderr, "unexpected %s\n", argv[i]); exit(2); }
  }
  if (!a.file1 || !a.file2) { fprintf(stderr, "usage: FILE1 FILE2 [--threads N] [--ratio R] [--pairs OUT] ...\n"); exit(2); }
  return a;
}

// Ratio-test matches (query, nearest) as int32 pairs.
static void write_pairs(const char *path, const std::vector<int32_t> &pairs) {
  if (!path) return;
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(pairs.data(), 4, pairs.size(), f) != pairs.size()) { perror(path); exit(2); }
  fclose(f);
}
