// pckeeper: holds a copy of a target process's userfaultfd for the fault handler (the daemon),
// so that the daemon dying cannot let the process run on zero-filled pages. Closing the last copy of
// a userfaultfd unregisters its ranges, and every missing page then reads as zero.
//
// fd 3 is a Unix socket to the daemon. The daemon sends one byte 'U' with the uffd (SCM_RIGHTS),
// 'P' and a u32 pid once it knows the process (as this pid namespace sees it), and 'D' once the
// process needs the uffd no more (every page present, or the process gone). If fd 3 ends without
// 'D' (the daemon crashed or was killed), the keeper SIGKILLs the process, waits for it to die,
// and only then lets the uffd go.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int main(void) {
  char tag = 0;
  int uffd = receive_fd(3, &tag);
  if (uffd < 0 || tag != 'U') {
    fprintf(stderr, "pckeeper: no userfaultfd from the daemon\n");
    return 1;
  }
  pid_t pid = 0;
  int pidfd = -1;
  for (;;) {
    if (read_full(3, &tag, 1) != 0) break; // EOF or an error: the daemon is gone
    if (tag == 'D') return 0;              // the daemon is done with the process: let the uffd go
    if (tag == 'P') {
      uint32_t p;
      if (read_full(3, &p, 4) != 0) break;
      if (pidfd >= 0) close(pidfd);
      pid = (pid_t)p;
      // A handle that cannot be confused with a reused pid later.
      pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
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
