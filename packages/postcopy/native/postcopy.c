// Thin syscall layer for postcopy. No policy: every function maps to one
// syscall (or a tight retry loop around one). Hot-path calls return -errno
// instead of throwing, because a JS exception costs microseconds.
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, "ERR_NATIVE_ARGS", "bad native argument"); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static napi_value throw_errno(napi_env env, const char *syscall_name, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s failed: %s", syscall_name, strerror(err));
  napi_value message, error, code, errno_value, syscall_value;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  const char *name = strerrorname_np(err);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_int32(env, err, &errno_value);
  napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "code", code);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
  return NULL;
}

static napi_value make_i64(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

static napi_value make_u64_big(napi_env env, uint64_t v) {
  napi_value out;
  napi_create_bigint_uint64(env, v, &out);
  return out;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  return 0;
}

static int64_t arg_i64(napi_env env, napi_value v, int64_t fallback) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_number) {
    int64_t out;
    napi_get_value_int64(env, v, &out);
    return out;
  }
  if (t == napi_bigint) {
    int64_t out;
    bool lossless;
    napi_get_value_bigint_int64(env, v, &out, &lossless);
    return out;
  }
  if (t == napi_boolean) {
    bool b;
    napi_get_value_bool(env, v, &b);
    return b ? 1 : 0;
  }
  return fallback;
}

// Resolves a Buffer/TypedArray/ArrayBuffer to a byte pointer and length.
static int arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  napi_is_typedarray(env, v, &is);
  if (is) {
    napi_typedarray_type type;
    size_t length, offset;
    napi_value ab;
    void *base;
    if (napi_get_typedarray_info(env, v, &type, &length, &base, &ab, &offset) != napi_ok) return -1;
    size_t elem = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: elem = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
      default: elem = 1;
    }
    *data = base;
    *len = length * elem;
    return 0;
  }
  napi_is_arraybuffer(env, v, &is);
  if (is) {
    void *base;
    if (napi_get_arraybuffer_info(env, v, &base, len) != napi_ok) return -1;
    *data = base;
    return 0;
  }
  return -1;
}

// Bounds-checked (buffer, offset, length) triple.
static int arg_span(napi_env env, napi_value *argv, uint8_t **ptr, size_t *len) {
  uint8_t *data;
  size_t size;
  if (arg_bytes(env, argv[0], &data, &size) != 0) return -1;
  int64_t off = arg_i64(env, argv[1], 0);
  int64_t n = arg_i64(env, argv[2], (int64_t)size - off);
  if (off < 0 || n < 0 || (uint64_t)off + (uint64_t)n > size) return -1;
  *ptr = data + off;
  *len = (size_t)n;
  return 0;
}

#define SPAN_OR_THROW(args, ptr, len)                                         \
  if (arg_span(env, args, &ptr, &len) != 0) {                                 \
    napi_throw_range_error(env, "ERR_NATIVE_RANGE", "buffer span out of range"); \
    return NULL;                                                              \
  }

// ---------- userfaultfd ----------

static napi_value uffd_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  int flags = O_CLOEXEC | (arg_i64(env, argv[0], 0) ? O_NONBLOCK : 0);
  int fd = (int)syscall(SYS_userfaultfd, flags);
  if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
    int saved = errno;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
      fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
      int err = errno;
      close(dev);
      if (fd < 0) return throw_errno(env, "ioctl(USERFAULTFD_IOC_NEW)", err);
      return make_i64(env, fd);
    }
    errno = saved;
  }
  if (fd < 0) return throw_errno(env, "userfaultfd", errno);
  return make_i64(env, fd);
}

// uffdApi(fd, features: bigint) -> { features: bigint, ioctls: bigint }
static napi_value uffd_api(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  struct uffdio_api api = {.api = UFFD_API, .features = (uint64_t)arg_i64(env, argv[1], 0)};
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_API, &api) != 0) return throw_errno(env, "ioctl(UFFDIO_API)", errno);
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "features", make_u64_big(env, api.features));
  napi_set_named_property(env, out, "ioctls", make_u64_big(env, api.ioctls));
  return out;
}

// uffdRegister(fd, addr, len, mode) -> ioctls: bigint
static napi_value uffd_register(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  CHECK(get_args(env, info, 4, argv) == 0 ? napi_ok : napi_generic_failure);
  struct uffdio_register reg = {
      .range = {.start = (uint64_t)arg_i64(env, argv[1], 0), .len = (uint64_t)arg_i64(env, argv[2], 0)},
      .mode = (uint64_t)arg_i64(env, argv[3], UFFDIO_REGISTER_MODE_MISSING),
  };
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_REGISTER, &reg) != 0) return throw_errno(env, "ioctl(UFFDIO_REGISTER)", errno);
  return make_u64_big(env, reg.ioctls);
}

static napi_value uffd_unregister(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  CHECK(get_args(env, info, 3, argv) == 0 ? napi_ok : napi_generic_failure);
  struct uffdio_range range = {.start = (uint64_t)arg_i64(env, argv[1], 0), .len = (uint64_t)arg_i64(env, argv[2], 0)};
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_UNREGISTER, &range) != 0) return throw_errno(env, "ioctl(UFFDIO_UNREGISTER)", errno);
  return NULL;
}

// uffdCopy(fd, dst, buf, off, len, dontWake) -> bytes copied, or -errno.
// A partial copy returns the bytes done; the caller decides what to do next.
static napi_value uffd_copy(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  CHECK(get_args(env, info, 6, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *src;
  size_t len;
  SPAN_OR_THROW(argv + 2, src, len);
  struct uffdio_copy copy = {
      .dst = (uint64_t)arg_i64(env, argv[1], 0),
      .src = (uint64_t)(uintptr_t)src,
      .len = len,
      .mode = arg_i64(env, argv[5], 0) ? UFFDIO_COPY_MODE_DONTWAKE : 0,
  };
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_COPY, &copy) == 0) return make_i64(env, (int64_t)len);
  if (copy.copy > 0) return make_i64(env, copy.copy);
  return make_i64(env, copy.copy < 0 ? copy.copy : -errno);
}

// uffdZeropage(fd, dst, len, dontWake) -> bytes zeroed, or -errno.
static napi_value uffd_zeropage(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  CHECK(get_args(env, info, 4, argv) == 0 ? napi_ok : napi_generic_failure);
  struct uffdio_zeropage zp = {
      .range = {.start = (uint64_t)arg_i64(env, argv[1], 0), .len = (uint64_t)arg_i64(env, argv[2], 0)},
      .mode = arg_i64(env, argv[3], 0) ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0,
  };
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_ZEROPAGE, &zp) == 0) return make_i64(env, (int64_t)zp.range.len);
  if (zp.zeropage > 0) return make_i64(env, zp.zeropage);
  return make_i64(env, zp.zeropage < 0 ? zp.zeropage : -errno);
}

static napi_value uffd_wake(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  CHECK(get_args(env, info, 3, argv) == 0 ? napi_ok : napi_generic_failure);
  struct uffdio_range range = {.start = (uint64_t)arg_i64(env, argv[1], 0), .len = (uint64_t)arg_i64(env, argv[2], 0)};
  if (ioctl((int)arg_i64(env, argv[0], -1), UFFDIO_WAKE, &range) != 0) return make_i64(env, -errno);
  return make_i64(env, 0);
}

// readInto(fd, buf, off, len) -> bytes read, 0 at EOF, or -errno. One read(2).
static napi_value read_into(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  CHECK(get_args(env, info, 4, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *dst;
  size_t len;
  SPAN_OR_THROW(argv + 1, dst, len);
  ssize_t n;
  do n = read((int)arg_i64(env, argv[0], -1), dst, len);
  while (n < 0 && errno == EINTR);
  return make_i64(env, n < 0 ? -errno : n);
}

// readFull(fd, buf, off, len) -> len, or fewer at EOF, or -errno.
static napi_value read_full(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  CHECK(get_args(env, info, 4, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *dst;
  size_t len;
  SPAN_OR_THROW(argv + 1, dst, len);
  int fd = (int)arg_i64(env, argv[0], -1);
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, dst + done, len - done);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_i64(env, -errno);
    }
    done += (size_t)n;
  }
  return make_i64(env, (int64_t)done);
}

// writeAll(fd, buf, off, len) -> len, or -errno. MSG_NOSIGNAL for sockets.
static napi_value write_all(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  CHECK(get_args(env, info, 4, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *src;
  size_t len;
  SPAN_OR_THROW(argv + 1, src, len);
  int fd = (int)arg_i64(env, argv[0], -1);
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(fd, src + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = write(fd, src + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_i64(env, -errno);
    }
    done += (size_t)n;
  }
  return make_i64(env, (int64_t)done);
}

// pollIn(fds: Int32Array, timeoutMs) -> bitmask of readable (or hung-up) entries, 0 on timeout, or -errno.
static napi_value poll_in(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *data;
  size_t size;
  if (arg_bytes(env, argv[0], &data, &size) != 0 || size / 4 > 30) {
    napi_throw_range_error(env, "ERR_NATIVE_RANGE", "pollIn takes an Int32Array of at most 30 fds");
    return NULL;
  }
  size_t count = size / 4;
  struct pollfd pfds[30];
  for (size_t i = 0; i < count; i++) {
    pfds[i].fd = ((int32_t *)data)[i];
    pfds[i].events = POLLIN;
    pfds[i].revents = 0;
  }
  int r;
  do r = poll(pfds, count, (int)arg_i64(env, argv[1], -1));
  while (r < 0 && errno == EINTR);
  if (r < 0) return make_i64(env, -errno);
  int64_t mask = 0;
  for (size_t i = 0; i < count; i++)
    if (pfds[i].revents) mask |= (int64_t)1 << i;
  return make_i64(env, mask);
}

// ---------- checksums ----------
// CRC32C (Castagnoli, reflected 0x82F63B78), the same as iSCSI and ext4. SSE4.2 has an instruction
// for it; other CPUs take the table.

static uint32_t crc32c_table[256];

static void crc32c_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc32c_table[i] = c;
  }
}

static uint32_t crc32c_soft(const uint8_t *p, size_t n) {
  uint32_t c = ~0u;
  while (n--) c = crc32c_table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles and a throughput of 1: three independent streams
// over three thirds of a page run at once, then their CRCs are joined. Joining is linear: moving a
// raw CRC register past n zero bytes is a fixed 32x32 bit matrix, kept as four byte tables.
typedef struct {
  size_t stride; // bytes per stream
  uint32_t shift[4][256];
} crc32c_join;

__attribute__((target("sse4.2"))) static uint64_t crc32c_raw(uint64_t c, const uint8_t *p, size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

__attribute__((target("sse4.2"))) static void crc32c_join_init(crc32c_join *j, size_t stride) {
  uint32_t basis[32];
  for (int i = 0; i < 32; i++) {
    uint64_t c = (uint64_t)1 << i;
    for (size_t k = 0; k < stride / 8; k++) c = __builtin_ia32_crc32di(c, 0);
    basis[i] = (uint32_t)c;
  }
  for (int t = 0; t < 4; t++)
    for (int b = 0; b < 256; b++) {
      uint32_t v = 0;
      for (int i = 0; i < 8; i++)
        if (b & (1 << i)) v ^= basis[t * 8 + i];
      j->shift[t][b] = v;
    }
  j->stride = stride;
}

static inline uint32_t crc32c_shift(const crc32c_join *j, uint32_t c) {
  return j->shift[0][c & 0xff] ^ j->shift[1][(c >> 8) & 0xff] ^ j->shift[2][(c >> 16) & 0xff] ^ j->shift[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_3way(const crc32c_join *j, const uint8_t *p, size_t n) {
  size_t s = j->stride;
  const uint8_t *a = p, *b = p + s, *c = p + 2 * s;
  uint64_t ca = 0xffffffffu, cb = 0, cc = 0;
  for (size_t k = 0; k < s; k += 8) {
    uint64_t wa, wb, wc;
    memcpy(&wa, a + k, 8);
    memcpy(&wb, b + k, 8);
    memcpy(&wc, c + k, 8);
    ca = __builtin_ia32_crc32di(ca, wa);
    cb = __builtin_ia32_crc32di(cb, wb);
    cc = __builtin_ia32_crc32di(cc, wc);
  }
  uint32_t r = crc32c_shift(j, crc32c_shift(j, (uint32_t)ca) ^ (uint32_t)cb) ^ (uint32_t)cc;
  return ~(uint32_t)crc32c_raw(r, p + 3 * s, n - 3 * s);
}

// Tables for the two page sizes in use.
static crc32c_join join_4k, join_64k;

static uint32_t crc32c_hw(const uint8_t *p, size_t n) {
  crc32c_join *j = n == 4096 ? &join_4k : n == 65536 ? &join_64k : NULL;
  if (!j) return ~(uint32_t)crc32c_raw(0xffffffffu, p, n);
  return crc32c_3way(j, p, n);
}
static int crc32c_has_hw(void) { return __builtin_cpu_supports("sse4.2"); }
static void crc32c_hw_init(void) {
  crc32c_join_init(&join_4k, (4096 / 3) & ~(size_t)7);
  crc32c_join_init(&join_64k, (65536 / 3) & ~(size_t)7);
}
#else
static uint32_t crc32c_hw(const uint8_t *p, size_t n) { return crc32c_soft(p, n); }
static int crc32c_has_hw(void) { return 0; }
static void crc32c_hw_init(void) {}
#endif

static int use_crc32c_hw;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

// Once per process: every worker thread loads this addon and runs init().
static void crc32c_setup(void) {
  crc32c_init();
  use_crc32c_hw = crc32c_has_hw();
  if (use_crc32c_hw) crc32c_hw_init();
}

// crc32cPages(buf, offset, pageSize, count, out, outOffset): the CRC32C of each page, as u32 LE into out
static napi_value crc32c_pages(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  CHECK(get_args(env, info, 6, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *buf, *out;
  size_t len, out_len;
  if (arg_bytes(env, argv[0], &buf, &len) != 0 || arg_bytes(env, argv[4], &out, &out_len) != 0) {
    napi_throw_type_error(env, NULL, "crc32cPages: buffers expected");
    return NULL;
  }
  size_t offset = (size_t)arg_i64(env, argv[1], 0), ps = (size_t)arg_i64(env, argv[2], 0), count = (size_t)arg_i64(env, argv[3], 0);
  size_t out_offset = (size_t)arg_i64(env, argv[5], 0);
  if (ps == 0 || offset > len || count > (len - offset) / ps || out_offset > out_len || count > (out_len - out_offset) / 4) {
    napi_throw_range_error(env, NULL, "crc32cPages: out of bounds");
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    const uint8_t *page = buf + offset + i * ps;
    uint32_t c = use_crc32c_hw ? crc32c_hw(page, ps) : crc32c_soft(page, ps);
    uint8_t *o = out + out_offset + i * 4;
    o[0] = (uint8_t)c;
    o[1] = (uint8_t)(c >> 8);
    o[2] = (uint8_t)(c >> 16);
    o[3] = (uint8_t)(c >> 24);
  }
  return NULL;
}

// ---------- memory ----------

// mmapAnon(len, hint, fixedNoReplace) -> addr
static napi_value mmap_anon(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  CHECK(get_args(env, info, 3, argv) == 0 ? napi_ok : napi_generic_failure);
  size_t len = (size_t)arg_i64(env, argv[0], 0);
  void *hint = (void *)(uintptr_t)arg_i64(env, argv[1], 0);
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (arg_i64(env, argv[2], 0) ? MAP_FIXED_NOREPLACE : 0);
  void *p = mmap(hint, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) return throw_errno(env, "mmap", errno);
  return make_i64(env, (int64_t)(uintptr_t)p);
}

static napi_value munmap_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  if (munmap((void *)(uintptr_t)arg_i64(env, argv[0], 0), (size_t)arg_i64(env, argv[1], 0)) != 0)
    return throw_errno(env, "munmap", errno);
  return NULL;
}

// mremap(addr, oldLen, newLen, flags, newAddr) -> the address it lives at now
static napi_value mremap_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  CHECK(get_args(env, info, 5, argv) == 0 ? napi_ok : napi_generic_failure);
  void *p = mremap((void *)(uintptr_t)arg_i64(env, argv[0], 0), (size_t)arg_i64(env, argv[1], 0), (size_t)arg_i64(env, argv[2], 0),
                   (int)arg_i64(env, argv[3], 0), (void *)(uintptr_t)arg_i64(env, argv[4], 0));
  if (p == MAP_FAILED) return throw_errno(env, "mremap", errno);
  return make_i64(env, (int64_t)(uintptr_t)p);
}

static napi_value madvise_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  CHECK(get_args(env, info, 3, argv) == 0 ? napi_ok : napi_generic_failure);
  if (madvise((void *)(uintptr_t)arg_i64(env, argv[0], 0), (size_t)arg_i64(env, argv[1], 0), (int)arg_i64(env, argv[2], 0)) != 0)
    return throw_errno(env, "madvise", errno);
  return NULL;
}

// viewMemory(addr, len) -> ArrayBuffer aliasing memory this process owns; the caller keeps it mapped.
static napi_value view_memory(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  void *addr = (void *)(uintptr_t)arg_i64(env, argv[0], 0);
  size_t len = (size_t)arg_i64(env, argv[1], 0);
  if (napi_create_external_arraybuffer(env, addr, len, NULL, NULL, &out) != napi_ok) {
    napi_throw_error(env, "ERR_NATIVE_VIEW", "external ArrayBuffers are not allowed in this runtime");
    return NULL;
  }
  return out;
}

// touchPages(addr, count, stride, write, latenciesNs?: Float64Array) -> elapsed ns.
// Each touch is timed on its own so a benchmark sees the fault as the faulting thread does.
static napi_value touch_pages(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  CHECK(get_args(env, info, 5, argv) == 0 ? napi_ok : napi_generic_failure);
  volatile uint8_t *base = (volatile uint8_t *)(uintptr_t)arg_i64(env, argv[0], 0);
  int64_t count = arg_i64(env, argv[1], 0), stride = arg_i64(env, argv[2], 4096);
  int write_mode = (int)arg_i64(env, argv[3], 0);
  double *lat = NULL;
  size_t lat_bytes = 0;
  uint8_t *raw;
  if (arg_bytes(env, argv[4], &raw, &lat_bytes) == 0) lat = (double *)raw;
  if (lat && lat_bytes / 8 < (size_t)count) {
    napi_throw_range_error(env, "ERR_NATIVE_RANGE", "latency array too short");
    return NULL;
  }
  struct timespec t0, a, b;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint8_t sink = 0;
  for (int64_t i = 0; i < count; i++) {
    if (lat) clock_gettime(CLOCK_MONOTONIC, &a);
    if (write_mode) base[i * stride] = (uint8_t)(base[i * stride] + 1);
    else sink ^= base[i * stride];
    if (lat) {
      clock_gettime(CLOCK_MONOTONIC, &b);
      lat[i] = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    }
  }
  (void)sink;
  clock_gettime(CLOCK_MONOTONIC, &b);
  return make_i64(env, (int64_t)(b.tv_sec - t0.tv_sec) * 1000000000 + (b.tv_nsec - t0.tv_nsec));
}

// processVmReadv(pid, remoteAddr, buf, off, len) -> bytes read, or -errno.
static napi_value process_vm_readv_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  CHECK(get_args(env, info, 5, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *dst;
  size_t len;
  SPAN_OR_THROW(argv + 2, dst, len);
  struct iovec local = {.iov_base = dst, .iov_len = len};
  struct iovec remote = {.iov_base = (void *)(uintptr_t)arg_i64(env, argv[1], 0), .iov_len = len};
  ssize_t n = process_vm_readv((pid_t)arg_i64(env, argv[0], 0), &local, 1, &remote, 1, 0);
  return make_i64(env, n < 0 ? -errno : n);
}

// ---------- sockets and fds ----------

static napi_value set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return NULL;
}

// tcpConnect(host: string, port) -> blocking fd with TCP_NODELAY.
static napi_value tcp_connect(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  char host[128];
  size_t hl;
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hl));
  int port = (int)arg_i64(env, argv[1], 0);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  int family;
  struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    family = AF_INET; in4->sin_family = AF_INET; in4->sin_port = htons(port); sl = sizeof *in4;
  } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    family = AF_INET6; in6->sin6_family = AF_INET6; in6->sin6_port = htons(port); sl = sizeof *in6;
  } else {
    napi_throw_type_error(env, "ERR_NATIVE_ADDRESS", "tcpConnect takes a numeric IP address");
    return NULL;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int r;
  do r = connect(fd, (struct sockaddr *)&ss, sl);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "connect", err);
  }
  set_nodelay(fd);
  return make_i64(env, fd);
}

static napi_value unix_connect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t pl;
  CHECK(napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof sa.sun_path, &pl));
  if (pl >= sizeof sa.sun_path - 1) {
    napi_throw_range_error(env, "ERR_NATIVE_RANGE", "unix socket path too long");
    return NULL;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int r;
  do r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "connect", err);
  }
  return make_i64(env, fd);
}

// setBlocking(fd, blocking)
static napi_value set_blocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  int fd = (int)arg_i64(env, argv[0], -1);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return throw_errno(env, "fcntl", errno);
  fl = arg_i64(env, argv[1], 1) ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
  if (fcntl(fd, F_SETFL, fl) < 0) return throw_errno(env, "fcntl", errno);
  return NULL;
}

// setRecvTimeout(fd, ms): a blocking recv on fd fails with EAGAIN after ms without data (0: never)
static napi_value set_recv_timeout(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  int64_t ms = arg_i64(env, argv[1], 0);
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (setsockopt((int)arg_i64(env, argv[0], -1), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return throw_errno(env, "setsockopt", errno);
  return NULL;
}

static napi_value close_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  return make_i64(env, close((int)arg_i64(env, argv[0], -1)) < 0 ? -errno : 0);
}

// shutdown(fd, how = SHUT_RDWR) -> 0 or -errno. SHUT_RD wakes a thread blocked reading fd.
static napi_value shutdown_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  return make_i64(env, shutdown((int)arg_i64(env, argv[0], -1), (int)arg_i64(env, argv[1], SHUT_RDWR)) < 0 ? -errno : 0);
}

// dup(fd) -> a new close-on-exec fd for the same open file, or -errno.
static napi_value dup_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  int fd = fcntl((int)arg_i64(env, argv[0], -1), F_DUPFD_CLOEXEC, 0);
  return make_i64(env, fd < 0 ? -errno : fd);
}

// sendFd(sock, fd, payload) : one sendmsg with SCM_RIGHTS and at least one payload byte.
static napi_value send_fd(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  CHECK(get_args(env, info, 3, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *payload;
  size_t plen;
  if (arg_bytes(env, argv[2], &payload, &plen) != 0 || plen == 0) {
    napi_throw_type_error(env, "ERR_NATIVE_ARGS", "sendFd needs a non-empty payload");
    return NULL;
  }
  int fd = (int)arg_i64(env, argv[1], -1);
  struct iovec iov = {.iov_base = payload, .iov_len = plen};
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do n = sendmsg((int)arg_i64(env, argv[0], -1), &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "sendmsg", errno);
  return make_i64(env, n);
}

// recvFd(sock, buf) -> { bytes, fd } ; fd is -1 when the message carried none.
static napi_value recv_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  uint8_t *buf;
  size_t blen;
  if (arg_bytes(env, argv[1], &buf, &blen) != 0 || blen == 0) {
    napi_throw_type_error(env, "ERR_NATIVE_ARGS", "recvFd needs a non-empty buffer");
    return NULL;
  }
  struct iovec iov = {.iov_base = buf, .iov_len = blen};
  union { char buf[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do n = recvmsg((int)arg_i64(env, argv[0], -1), &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "recvmsg", errno);
  int fd = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *fds = (int *)CMSG_DATA(c);
      for (size_t i = 0; i < nfds; i++) {
        if (fd < 0) fd = fds[i];
        else close(fds[i]);  // one fd per message; extras would leak
      }
    }
  }
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "bytes", make_i64(env, n));
  napi_set_named_property(env, out, "fd", make_i64(env, fd));
  return out;
}

// unixListen(path, backlog) -> listening fd (blocking accept).
static napi_value unix_listen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t pl;
  CHECK(napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof sa.sun_path, &pl));
  if (pl >= sizeof sa.sun_path - 1) {
    napi_throw_range_error(env, "ERR_NATIVE_RANGE", "unix socket path too long");
    return NULL;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, (int)arg_i64(env, argv[1], 16)) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind/listen", err);
  }
  return make_i64(env, fd);
}

// accept(fd) -> connected fd, or -errno.
static napi_value accept_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  int fd;
  do fd = accept4((int)arg_i64(env, argv[0], -1), NULL, NULL, SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return make_i64(env, fd < 0 ? -errno : fd);
}

// socketpair(cloexec) -> [fd, fd], AF_UNIX stream. Without cloexec one end can go to a child as is;
// with it, only where the child's stdio names it (dup2 clears the flag), never to other children.
static napi_value socketpair_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | (arg_i64(env, argv[0], 0) ? SOCK_CLOEXEC : 0), 0, sv) < 0) return throw_errno(env, "socketpair", errno);
  napi_value out;
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, make_i64(env, sv[0]));
  napi_set_element(env, out, 1, make_i64(env, sv[1]));
  return out;
}

static napi_value eventfd_js(napi_env env, napi_callback_info info) {
  int fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return make_i64(env, fd);
}

static napi_value eventfd_signal(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  uint64_t one = 1;
  ssize_t n = write((int)arg_i64(env, argv[0], -1), &one, sizeof one);
  return make_i64(env, n < 0 ? -errno : 0);
}

// ---------- processes ----------

// peerPid(unixSocketFd) -> pid of the process that connected (SO_PEERCRED), or -errno.
static napi_value peer_pid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt((int)arg_i64(env, argv[0], -1), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return make_i64(env, -errno);
  return make_i64(env, cred.pid);
}

// pidfdOpen(pid) -> a pidfd (readable once the process has exited), or -errno.
static napi_value pidfd_open_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  long fd = syscall(SYS_pidfd_open, (pid_t)arg_i64(env, argv[0], -1), 0);
  return make_i64(env, fd < 0 ? -errno : fd);
}

// sameMemory(pid1, pid2) -> 1 if both share one mm (kcmp KCMP_VM), 0 if not, or -errno.
static napi_value same_memory_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  CHECK(get_args(env, info, 2, argv) == 0 ? napi_ok : napi_generic_failure);
  long r = syscall(SYS_kcmp, (pid_t)arg_i64(env, argv[0], -1), (pid_t)arg_i64(env, argv[1], -1), 1 /* KCMP_VM */, 0, 0);
  return make_i64(env, r < 0 ? -errno : r == 0);
}

// ---------- scheduling ----------

// setAffinity(cpuMask) for the calling thread.
static napi_value set_affinity(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  uint64_t mask = (uint64_t)arg_i64(env, argv[0], 0);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < 64; i++)
    if (mask & ((uint64_t)1 << i)) CPU_SET(i, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) return throw_errno(env, "sched_setaffinity", errno);
  return NULL;
}

// setIdlePolicy(idle) for the calling thread: SCHED_IDLE (runs only on a CPU nothing else wants),
// or back to SCHED_OTHER. 0 or -errno.
static napi_value set_idle_policy(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  CHECK(get_args(env, info, 1, argv) == 0 ? napi_ok : napi_generic_failure);
  bool idle = false;
  CHECK(napi_get_value_bool(env, argv[0], &idle));
  struct sched_param param = {.sched_priority = 0};
  return make_i64(env, sched_setscheduler(0, idle ? SCHED_IDLE : SCHED_OTHER, &param) == 0 ? 0 : -errno);
}

static napi_value gettid_js(napi_env env, napi_callback_info info) {
  return make_i64(env, (int64_t)syscall(SYS_gettid));
}

static napi_value now_ns(napi_env env, napi_callback_info info) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return make_i64(env, (int64_t)t.tv_sec * 1000000000 + t.tv_nsec);
}

#define EXPORT(name, fn)                                              \
  do {                                                                \
    napi_value f;                                                     \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f); \
    napi_set_named_property(env, exports, name, f);                   \
  } while (0)

#define CONST(name, value) napi_set_named_property(env, consts, name, make_i64(env, (int64_t)(value)))

static napi_value init(napi_env env, napi_value exports) {
  pthread_once(&crc32c_once, crc32c_setup);
  EXPORT("uffdOpen", uffd_open);
  EXPORT("uffdApi", uffd_api);
  EXPORT("uffdRegister", uffd_register);
  EXPORT("uffdUnregister", uffd_unregister);
  EXPORT("uffdCopy", uffd_copy);
  EXPORT("uffdZeropage", uffd_zeropage);
  EXPORT("uffdWake", uffd_wake);
  EXPORT("readInto", read_into);
  EXPORT("readFull", read_full);
  EXPORT("writeAll", write_all);
  EXPORT("pollIn", poll_in);
  EXPORT("mmapAnon", mmap_anon);
  EXPORT("munmap", munmap_js);
  EXPORT("madvise", madvise_js);
  EXPORT("mremap", mremap_js);
  EXPORT("crc32cPages", crc32c_pages);
  EXPORT("setRecvTimeout", set_recv_timeout);
  EXPORT("viewMemory", view_memory);
  EXPORT("touchPages", touch_pages);
  EXPORT("processVmReadv", process_vm_readv_js);
  EXPORT("tcpConnect", tcp_connect);
  EXPORT("unixConnect", unix_connect);
  EXPORT("setBlocking", set_blocking);
  EXPORT("close", close_js);
  EXPORT("shutdown", shutdown_js);
  EXPORT("dup", dup_js);
  EXPORT("unixListen", unix_listen);
  EXPORT("accept", accept_js);
  EXPORT("socketpair", socketpair_js);
  EXPORT("sendFd", send_fd);
  EXPORT("recvFd", recv_fd);
  EXPORT("eventfd", eventfd_js);
  EXPORT("eventfdSignal", eventfd_signal);
  EXPORT("setAffinity", set_affinity);
  EXPORT("setIdlePolicy", set_idle_policy);
  EXPORT("gettid", gettid_js);
  EXPORT("peerPid", peer_pid);
  EXPORT("pidfdOpen", pidfd_open_js);
  EXPORT("sameMemory", same_memory_js);
  EXPORT("nowNs", now_ns);

  napi_value consts;
  napi_create_object(env, &consts);
  CONST("UFFD_API", UFFD_API);
  CONST("UFFD_EVENT_PAGEFAULT", UFFD_EVENT_PAGEFAULT);
  CONST("UFFD_EVENT_FORK", UFFD_EVENT_FORK);
  CONST("UFFD_EVENT_REMAP", UFFD_EVENT_REMAP);
  CONST("UFFD_EVENT_REMOVE", UFFD_EVENT_REMOVE);
  CONST("UFFD_EVENT_UNMAP", UFFD_EVENT_UNMAP);
  CONST("UFFD_PAGEFAULT_FLAG_WRITE", UFFD_PAGEFAULT_FLAG_WRITE);
  CONST("UFFDIO_REGISTER_MODE_MISSING", UFFDIO_REGISTER_MODE_MISSING);
  CONST("UFFD_FEATURE_EVENT_FORK", UFFD_FEATURE_EVENT_FORK);
  CONST("UFFD_FEATURE_EVENT_REMAP", UFFD_FEATURE_EVENT_REMAP);
  CONST("UFFD_FEATURE_EVENT_REMOVE", UFFD_FEATURE_EVENT_REMOVE);
  CONST("UFFD_FEATURE_EVENT_UNMAP", UFFD_FEATURE_EVENT_UNMAP);
  CONST("UFFD_FEATURE_MISSING_SHMEM", UFFD_FEATURE_MISSING_SHMEM);
  CONST("MREMAP_MAYMOVE", MREMAP_MAYMOVE);
  CONST("MREMAP_FIXED", MREMAP_FIXED);
  CONST("UFFD_FEATURE_THREAD_ID", UFFD_FEATURE_THREAD_ID);
  CONST("UFFD_MSG_SIZE", sizeof(struct uffd_msg));
  CONST("MADV_DONTNEED", MADV_DONTNEED);
  CONST("EEXIST", EEXIST);
  CONST("EAGAIN", EAGAIN);
  CONST("ENOENT", ENOENT);
  CONST("ESRCH", ESRCH);
  CONST("EFAULT", EFAULT);
  CONST("EINTR", EINTR);
  CONST("ECONNRESET", ECONNRESET);
  CONST("EPIPE", EPIPE);
  CONST("PAGE_SIZE", sysconf(_SC_PAGESIZE));
  napi_set_named_property(env, exports, "constants", consts);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
