// memproc MIB OUT: a memory-heavy process for migration tests. It fills MIB of heap with a known
// pattern, then every 200 ms recomputes a checksum over every word and appends "ok N SUM" (or
// "BAD N SUM") to OUT. A page lost or corrupted in migration shows up as BAD.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: memproc MIB OUT\n");
    return 2;
  }
  size_t words = ((size_t)atoi(argv[1]) << 20) / 8;
  uint64_t *p = malloc(words * 8);
  if (!p) return 1;
  uint64_t expected = 0;
  for (size_t i = 0; i < words; i++) expected += p[i] = i * 2654435761u;
  FILE *out = fopen(argv[2], "a");
  if (!out) return 1;
  struct timespec pause = {0, 200 * 1000 * 1000};
  for (unsigned long n = 0;; n++) {
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) sum += p[i];
    fprintf(out, "%s %lu %llu\n", sum == expected ? "ok" : "BAD", n, (unsigned long long)sum);
    fflush(out);
    nanosleep(&pause, NULL);
  }
}
