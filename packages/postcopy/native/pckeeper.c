// pckeeper: holds a copy of a target process's userfaultfd for the fault handler (the daemon),
// so that the daemon dying cannot let the process run on zero-filled pages. Closing the last copy of
// a userfaultfd unregisters its ranges, and every missing page then reads as zero.
//
// fd 3 is a Unix socket to the daemon (the tags: src/protocol/keeper.ts, KeeperTag). The daemon sends one byte 'U' with the uffd (SCM_RIGHTS),
// 'P' and a u32 pid once it knows the process (as this pid namespace sees it), 'M' u32 n and n
// bytes a successor would need, 'R' u16 n, a socket path of n bytes and u32 ms: where to wait for
// a successor, and 'D' once the process needs the uffd no more (every page present, or the
// process gone). If fd 3 ends without 'D' (the daemon crashed or was killed), the keeper waits on
// that path for a successor and hands it 'U', 'P' and 'M'; with none, it SIGKILLs the process,
// waits for it to die, and only then lets the uffd go.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <unistd.h>

static int receive_fd(int sock, char *tag) {
  char ctl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = tag, .iov_len = 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n != 1) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  return -1;
}

static int read_full(int fd, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

static int send_fd(int sock, int fd) {
  char tag = 'U';
  char ctl[CMSG_SPACE(sizeof(int))];
  memset(ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = &tag, .iov_len = 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -1;
}

static int write_full(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

/** Waits up to ms for a successor daemon on path; returns its connection, or -1. */
static int await_successor(const char *path, int ms) {
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (ls < 0 || strlen(path) >= sizeof addr.sun_path) return -1;
  strcpy(addr.sun_path, path);
  unlink(path);
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(ls, 1) != 0) {
    close(ls);
    return -1;
  }
  struct pollfd p = {.fd = ls, .events = POLLIN};
  int conn = poll(&p, 1, ms) == 1 ? accept4(ls, NULL, NULL, SOCK_CLOEXEC) : -1;
  close(ls);
  unlink(path);
  return conn;
}

int main(void) {
  int daemon = 3;
  char tag = 0;
  int uffd = receive_fd(daemon, &tag);
  if (uffd < 0 || tag != 'U') {
    fprintf(stderr, "pckeeper: no userfaultfd from the daemon\n");
    return 1;
  }
  pid_t pid = 0;
  int pidfd = -1;
  char recover_path[108] = "";
  uint32_t recover_ms = 0;
  static char describe[65536];
  uint32_t describe_len = 0;
  for (;;) {
    if (read_full(daemon, &tag, 1) != 0) {
      // The daemon is gone. A successor may take the uffd over, if the daemon named a place.
      if (!recover_path[0]) break;
      fprintf(stderr, "pckeeper: the fault handler went away; waiting %u ms on %s for another\n", recover_ms, recover_path);
      close(daemon);
      daemon = await_successor(recover_path, (int)recover_ms);
      uint32_t p = (uint32_t)pid;
      if (daemon < 0 || send_fd(daemon, uffd) != 0 || write_full(daemon, "P", 1) != 0 || write_full(daemon, &p, 4) != 0 ||
          write_full(daemon, "M", 1) != 0 || write_full(daemon, &describe_len, 4) != 0 || write_full(daemon, describe, describe_len) != 0)
        break;
      recover_path[0] = 0; // the successor names its own place, if it wants one
      continue;
    }
    if (tag == 'D') return 0; // the daemon is done with the process: let the uffd go
    if (tag == 'P') {
      uint32_t p;
      if (read_full(daemon, &p, 4) != 0) break;
      if (pidfd >= 0) close(pidfd);
      pid = (pid_t)p;
      // A handle that cannot be confused with a reused pid later.
      pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    } else if (tag == 'M') {
      // What a successor needs to know (the mappings): kept, not read.
      if (read_full(daemon, &describe_len, 4) != 0 || describe_len > sizeof describe || read_full(daemon, describe, describe_len) != 0) break;
    } else if (tag == 'R') {
      uint16_t len;
      if (read_full(daemon, &len, 2) != 0 || len >= sizeof recover_path || read_full(daemon, recover_path, len) != 0 || read_full(daemon, &recover_ms, 4) != 0) break;
      recover_path[len] = 0;
    } else {
      break;
    }
  }
  if (pid <= 0) {
    fprintf(stderr, "pckeeper: the fault handler went away before it named its process\n");
    close(uffd);
    return 1;
  }
  fprintf(stderr, "pckeeper: the fault handler of process %d went away; killing it before its missing pages read as zero\n", (int)pid);
  if (pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    poll(&p, 1, 10000); // readable once the process has exited
  } else {
    kill(pid, SIGKILL);
  }
  close(uffd);
  return 1;
}
