// memproc MIB OUT [FORK]: a memory-heavy process for migration tests. It fills MIB of heap with a
// known pattern, then every 200 ms recomputes a checksum over every word and appends "ok N SUM"
// (or "BAD N SUM") to OUT. A page lost or corrupted in migration shows up as BAD. With FORK = 1
// the process itself never reads its heap: it writes "wait N" until the file OUT.fork exists,
// then each round a forked child does the check ("child ok N SUM") and exits. So a test can make
// the children, not the parent, be the ones that fault pages in after a restore.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: memproc MIB OUT [FORK]\n");
    return 2;
  }
  int fork_mode = argc == 4 && atoi(argv[3]) == 1;
  char trigger[4096];
  snprintf(trigger, sizeof trigger, "%s.fork", argv[2]);
  size_t words = ((size_t)atoi(argv[1]) << 20) / 8;
  uint64_t *p = malloc(words * 8);
  if (!p) return 1;
  uint64_t expected = 0;
  for (size_t i = 0; i < words; i++) expected += p[i] = i * 2654435761u;
  FILE *out = fopen(argv[2], "a");
  if (!out) return 1;
  struct timespec pause = {0, 200 * 1000 * 1000};
  for (unsigned long n = 0;; n++) {
    int forking = fork_mode && access(trigger, F_OK) == 0;
    pid_t child = forking ? fork() : 0;
    if (child > 0) {
      waitpid(child, NULL, 0);
    } else if (fork_mode && !forking) {
      fprintf(out, "wait %lu\n", n);
      fflush(out);
    } else {
      uint64_t sum = 0;
      for (size_t i = 0; i < words; i++) sum += p[i];
      fprintf(out, "%s%s %lu %llu\n", forking ? "child " : "", sum == expected ? "ok" : "BAD", n, (unsigned long long)sum);
      fflush(out);
      if (forking) _exit(0);
    }
    nanosleep(&pause, NULL);
  }
}
