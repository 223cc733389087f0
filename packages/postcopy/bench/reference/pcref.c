// pcref: the C reference for `postcopy bench`. The smallest program that does a remote page
// fault: touch -> uffd event -> request -> server reads the frozen donor -> reply -> UFFDIO_COPY.
// Blocking syscalls everywhere, no framing beyond a 16-byte request, no policy.
//
//   pcref donor BYTES                 map BYTES (64 KiB aligned), fill every 4 KiB with its
//                                     offset, print the address, then stop itself (SIGSTOP) until killed
//   pcref server ENDPOINT PID ADDR    serve one client: request {u64 offset, u32 len, u32 0},
//                                     reply len bytes read from PID at ADDR+offset
//   pcref fault ENDPOINT PAGE FAULTS TRIALS
//                                     remote faults; one JSON line per trial, ns per fault
//   pcref local PAGE FAULTS TRIALS    the kernel path alone: faults served from local memory
//   pcref rr ENDPOINT PAGE FAULTS TRIALS
//                                     the network round trip alone: request, receive, no uffd
// ENDPOINT is tcp:HOST:PORT or unix:PATH. The server prints "listening PORT" once bound
// (PORT 0 asks the kernel for one). TRIALS 0 takes batches from stdin instead: a line with a
// count runs that many more trials and ends with a "batch done" line, so that a benchmark can
// interleave this program with another one. Every trial is printed; warm-up is the caller's choice.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct request {
  uint64_t offset;
  uint32_t len;
  uint32_t pad;
};

static void die(const char *what) {
  fprintf(stderr, "pcref: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int read_full(int fd, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
    if (n == 0) return -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

// Parses tcp:HOST:PORT or unix:PATH into a sockaddr.
static socklen_t parse_endpoint(const char *spec, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (strncmp(spec, "unix:", 5) == 0) {
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    un->sun_family = AF_UNIX;
    if (strlen(spec + 5) >= sizeof un->sun_path) {
      fprintf(stderr, "pcref: unix path too long\n");
      exit(2);
    }
    strcpy(un->sun_path, spec + 5);
    return sizeof *un;
  }
  if (strncmp(spec, "tcp:", 4) == 0) {
    char host[64];
    const char *colon = strrchr(spec + 4, ':');
    if (!colon || (size_t)(colon - spec - 4) >= sizeof host) goto bad;
    memcpy(host, spec + 4, (size_t)(colon - spec - 4));
    host[colon - spec - 4] = 0;
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) goto bad;
    return sizeof *in;
  }
bad:
  fprintf(stderr, "pcref: bad endpoint %s (tcp:HOST:PORT or unix:PATH)\n", spec);
  exit(2);
}

static int connect_to(const char *spec) {
  struct sockaddr_storage ss;
  socklen_t len = parse_endpoint(spec, &ss);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) die("connect");
  int one = 1;
  if (ss.ss_family == AF_INET) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int cmd_donor(uint64_t bytes) {
  uint8_t *mem = mmap(NULL, bytes + 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  mem = (uint8_t *)(((uintptr_t)mem + 65535) & ~(uintptr_t)65535);  // any page size up to 64 KiB
  for (uint64_t off = 0; off < bytes; off += 4096) {
    memset(mem + off, (int)(off >> 12) & 0xff, 4096);
    memcpy(mem + off, &off, sizeof off);
  }
  printf("%llu\n", (unsigned long long)(uintptr_t)mem);
  fflush(stdout);
  raise(SIGSTOP);
  for (;;) pause();
  return 0;  // not reached: the benchmark kills the donor
}

static int cmd_server(const char *spec, pid_t pid, uint64_t base) {
  struct sockaddr_storage ss;
  socklen_t len = parse_endpoint(spec, &ss);
  int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_UNIX) unlink(((struct sockaddr_un *)&ss)->sun_path);
  if (bind(lfd, (struct sockaddr *)&ss, len) < 0) die("bind");
  if (listen(lfd, 1) < 0) die("listen");
  int port = 0;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(lfd, (struct sockaddr *)&bound, &blen);
    port = ntohs(bound.sin_port);
  }
  printf("listening %d\n", port);
  fflush(stdout);
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) die("accept");
  if (ss.ss_family == AF_INET) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  size_t cap = 1 << 20;
  uint8_t *buf = malloc(cap);
  struct request req;
  while (read_full(fd, &req, sizeof req) == 0) {
    if (req.len > cap) {
      fprintf(stderr, "pcref: request of %u bytes is too large\n", req.len);
      return 1;
    }
    struct iovec local = {buf, req.len}, remote = {(void *)(uintptr_t)(base + req.offset), req.len};
    if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != (ssize_t)req.len) die("process_vm_readv");
    if (write_full(fd, buf, req.len) < 0) die("send");
  }
  return 0;
}

// The fault handler thread: the same work our fault thread does, with nothing around it.
struct handler {
  int uffd;
  int sock;  // -1: serve from local memory (the kernel path alone)
  uint64_t base;
  uint32_t page;
  uint8_t *buf;
};

static void *handler_main(void *arg) {
  struct handler *h = arg;
  struct uffd_msg msg;
  for (;;) {
    ssize_t n = read(h->uffd, &msg, sizeof msg);
    if (n < 0 && errno == EINTR) continue;
    if (n != sizeof msg) die("read uffd");
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uint64_t addr = msg.arg.pagefault.address & ~((uint64_t)h->page - 1);
    if (h->sock >= 0) {
      struct request req = {addr - h->base, h->page, 0};
      if (write_full(h->sock, &req, sizeof req) < 0) die("send request");
      if (read_full(h->sock, h->buf, h->page) < 0) die("receive page");
    }
    struct uffdio_copy copy = {.dst = addr, .src = (uintptr_t)h->buf, .len = h->page, .mode = 0};
    if (ioctl(h->uffd, UFFDIO_COPY, &copy) < 0 && errno != EEXIST) die("UFFDIO_COPY");
  }
  return NULL;
}

// How many trials to run next: all of them once, or (trials == 0) a count read from stdin.
static int next_batch(int trials, int *started) {
  if (trials > 0) {
    if (*started) return 0;
    *started = 1;
    return trials;
  }
  char line[32];
  if (!fgets(line, sizeof line, stdin)) return 0;
  return atoi(line);
}

static void end_batch(int trials) {
  if (trials > 0) return;
  printf("batch done\n");
  fflush(stdout);
}

static void print_trial(int trial, const uint64_t *ns, uint32_t faults) {
  printf("{\"trial\":%d,\"ns\":[", trial);
  for (uint32_t i = 0; i < faults; i++) printf(i ? ",%llu" : "%llu", (unsigned long long)ns[i]);
  printf("]}\n");
  fflush(stdout);
}

static int cmd_fault(const char *spec, uint32_t page, uint32_t faults, int trials) {
  size_t len = (size_t)page * faults;
  uint8_t *region = mmap(NULL, len + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) die("mmap");
  region = (uint8_t *)(((uintptr_t)region + page - 1) & ~((uintptr_t)page - 1));
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) {
    uffd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (uffd >= 0) uffd = ioctl(uffd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
  }
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  struct uffdio_register reg = {.range = {(uintptr_t)region, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");

  struct handler h = {.uffd = uffd, .sock = spec ? connect_to(spec) : -1, .base = (uintptr_t)region, .page = page};
  h.buf = aligned_alloc(4096, page);
  memset(h.buf, 0x5a, page);
  pthread_t thread;
  if (pthread_create(&thread, NULL, handler_main, &h) != 0) die("pthread_create");

  uint64_t *ns = calloc(faults, sizeof *ns);
  int trial = 0, started = 0;
  for (int batch; (batch = next_batch(trials, &started)) > 0; end_batch(trials)) {
    for (int k = 0; k < batch; k++, trial++) {
      for (uint32_t i = 0; i < faults; i++) {
        volatile uint8_t *p = region + (size_t)i * page;
        uint64_t a = now_ns();
        *p = (uint8_t)(*p + 1);
        ns[i] = now_ns() - a;
      }
      print_trial(trial, ns, faults);
      if (madvise(region, len, MADV_DONTNEED) < 0) die("madvise");
    }
  }
  return 0;
}

static int cmd_rr(const char *spec, uint32_t page, uint32_t faults, int trials) {
  int fd = connect_to(spec);
  uint8_t *buf = malloc(page);
  uint64_t *ns = calloc(faults, sizeof *ns);
  int trial = 0, started = 0;
  for (int batch; (batch = next_batch(trials, &started)) > 0; end_batch(trials)) {
    for (int k = 0; k < batch; k++, trial++) {
      for (uint32_t i = 0; i < faults; i++) {
        struct request req = {(uint64_t)i * page, page, 0};
        uint64_t a = now_ns();
        if (write_full(fd, &req, sizeof req) < 0) die("send request");
        if (read_full(fd, buf, page) < 0) die("receive page");
        ns[i] = now_ns() - a;
      }
      print_trial(trial, ns, faults);
    }
  }
  return 0;
}

static uint64_t num(const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || end == s) {
    fprintf(stderr, "pcref: \"%s\" is not a number\n", s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  if (argc == 3 && !strcmp(argv[1], "donor")) return cmd_donor(num(argv[2]));
  if (argc == 5 && !strcmp(argv[1], "server")) return cmd_server(argv[2], (pid_t)num(argv[3]), num(argv[4]));
  if (argc == 6 && !strcmp(argv[1], "fault")) return cmd_fault(argv[2], (uint32_t)num(argv[3]), (uint32_t)num(argv[4]), (int)num(argv[5]));
  if (argc == 5 && !strcmp(argv[1], "local")) return cmd_fault(NULL, (uint32_t)num(argv[2]), (uint32_t)num(argv[3]), (int)num(argv[4]));
  if (argc == 6 && !strcmp(argv[1], "rr")) return cmd_rr(argv[2], (uint32_t)num(argv[3]), (uint32_t)num(argv[4]), (int)num(argv[5]));
  fprintf(stderr,
          "usage: pcref donor BYTES | server ENDPOINT PID ADDR | fault ENDPOINT PAGE FAULTS TRIALS |\n"
          "       local PAGE FAULTS TRIALS | rr ENDPOINT PAGE FAULTS TRIALS\n");
  return 2;
}
