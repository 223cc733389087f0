// remapproc MIB OUT: like memproc, but its buffer moves: every 200 ms it mremaps the whole buffer
// to the other of two places (MREMAP_FIXED), then recomputes the checksum over every word and
// appends "ok N SUM" (or "BAD N SUM") to OUT. A migration that loses track of moved pages shows BAD.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: remapproc MIB OUT\n");
    return 2;
  }
  size_t size = (size_t)atoi(argv[1]) << 20, words = size / 8;
  uint64_t *place[2];
  for (int i = 0; i < 2; i++) {
    place[i] = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (place[i] == MAP_FAILED) return 1;
  }
  uint64_t *p = place[0], expected = 0;
  for (size_t i = 0; i < words; i++) expected += p[i] = i * 2654435761u;
  FILE *out = fopen(argv[2], "a");
  if (!out) return 1;
  struct timespec pause = {0, 200 * 1000 * 1000};
  for (unsigned long n = 0;; n++) {
    uint64_t *to = p == place[0] ? place[1] : place[0];
    uint64_t *moved = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (moved == MAP_FAILED) return 1;
    uint64_t *from = p;
    p = moved;
    // the old place is unmapped now: keep it reserved for the next move back
    if (mmap(from, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) return 1;
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) sum += p[i];
    fprintf(out, "%s %lu %llu\n", sum == expected ? "ok" : "BAD", n, (unsigned long long)sum);
    fflush(out);
    nanosleep(&pause, NULL);
  }
}
