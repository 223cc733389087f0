// forkstorm MIB OUT FORKS [SEED [CRASH]]: a fork storm for migration tests. It fills MIB of heap with a
// known pattern and writes "ready" to OUT, then idles (never touching its heap) until OUT.fork
// exists. From then on it forks FORKS children at random moments (0-40 ms apart, at most 4 alive
// at once), touching and changing random words of its heap in between. Each child sums every word
// it inherited and appends "child ok I" or "child BAD I SUM EXPECTED" to OUT; the parent appends
// "child signal I SIG" for a child killed by a signal. Then "storm done FORKS", and every 200 ms
// after that "ok N" or "BAD N SUM" for its own heap, like memproc. With CRASH = K, the first K
// children read one word and kill themselves with SIGUSR1 instead (a child that dies of a signal
// during post-copy, for the migration's report).
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int out;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (write(out, line, (size_t)n) != n) _exit(3);
}

static uint64_t sum_of(const uint64_t *p, size_t words) {
  uint64_t s = 0;
  for (size_t i = 0; i < words; i++) s += p[i];
  return s;
}

static void sleep_us(long us) {
  struct timespec t = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&t, NULL);
}

/** Reaps finished children, or waits for one; says which died of a signal. */
static void reap(int block, int *alive, const pid_t *pids, int n) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, block ? 0 : WNOHANG)) > 0) {
    (*alive)--;
    for (int i = 0; i < n; i++)
      if (pids[i] == pid && WIFSIGNALED(status)) say("child signal %d %d\n", i, WTERMSIG(status));
    if (block) break;
  }
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: forkstorm MIB OUT FORKS [SEED [CRASH]]\n");
    return 2;
  }
  size_t words = ((size_t)atoi(argv[1]) << 20) / 8;
  int forks = atoi(argv[3]);
  srand(argc >= 5 ? (unsigned)atoi(argv[4]) : (unsigned)time(NULL));
  int crash = argc == 6 ? atoi(argv[5]) : 0;
  char trigger[4096];
  snprintf(trigger, sizeof trigger, "%s.fork", argv[2]);
  out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
  uint64_t *p = malloc(words * 8);
  pid_t *pids = calloc((size_t)forks + 1, sizeof *pids);
  if (out < 0 || !p || !pids) return 1;
  uint64_t expected = 0;
  for (size_t i = 0; i < words; i++) expected += p[i] = i * 2654435761u;
  say("ready\n");
  while (access(trigger, F_OK) != 0) sleep_us(1000);
  int alive = 0;
  for (int i = 0; i < forks; i++) {
    // Touch and change a few random words: faults in the parent, and a new sum for the next child.
    for (int k = 0; k < 8; k++) {
      size_t w = ((size_t)rand() * 7919u + (size_t)rand()) % words;
      p[w] += 1;
      expected += 1;
    }
    while (alive >= 4) reap(1, &alive, pids, i);
    pid_t child = fork();
    if (child < 0) {
      say("fork failed %d\n", i);
      return 1;
    }
    if (child == 0) {
      if (i < crash) {
        volatile uint64_t first = p[words / 2];
        (void)first;
        raise(SIGUSR1);
      }
      uint64_t got = sum_of(p, words);
      if (got == expected) say("child ok %d\n", i);
      else say("child BAD %d %llu %llu\n", i, (unsigned long long)got, (unsigned long long)expected);
      _exit(0);
    }
    pids[i] = child;
    alive++;
    reap(0, &alive, pids, i + 1);
    sleep_us(rand() % 40000);
  }
  while (alive > 0) reap(1, &alive, pids, forks);
  say("storm done %d\n", forks);
  for (unsigned long n = 0;; n++) {
    uint64_t got = sum_of(p, words);
    say("%s %lu %llu\n", got == expected ? "ok" : "BAD", n, (unsigned long long)got);
    sleep_us(200000);
  }
}
