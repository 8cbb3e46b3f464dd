// Batched UDP for the DNS listener: one socket (SO_REUSEPORT, non-blocking) watched by a
// uv_poll on Node's own event loop; each time it is readable one recvmmsg reads up to a batch
// of datagrams straight into an ArrayBuffer that JavaScript owns, and JavaScript gets one call
// with the count. Replies go the other way: JavaScript writes them into its output ArrayBuffer
// with a table of offsets, lengths and destinations, and one sendmmsg sends them. Nothing
// waits to fill a batch: a datagram alone is read and handed over at once.
//
// The table shared with JavaScript (Uint32 words, META_WORDS per datagram, the same layout for
// what was read and what is to be sent, so a reply's destination is the query's source copied):
//   0 offset   1 length   2 family (4 | 6)   3 port   4 IPv6 scope id   5 flags
//   6..9 address, as four big-endian 32-bit words (IPv4: word 6 only)
// An IPv4-mapped source on a dual-stack socket is reported as family 4 with FLAG_MAPPED.
//
// Everything JavaScript hands to send() is checked before anything is sent: a bad count,
// offset, length, family or port throws a TypeError or RangeError and sends nothing. The
// ArrayBuffers are looked up again at every use, so one detached meanwhile is an error, never
// a stale pointer. Replies the kernel will not take now (EAGAIN) are copied into a bounded
// queue and sent when the socket is writable; past the bound they are dropped and counted.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define META_WORDS 10
enum { M_OFFSET = 0, M_LENGTH, M_FAMILY, M_PORT, M_SCOPE, M_FLAGS, M_ADDR };
#define FLAG_TRUNC 1u
#define FLAG_MAPPED 2u
#define MAX_BATCH 1024
#define MAX_SLOT 65536
#define MAX_DATAGRAM 65535
/** Queued replies sent per sendmmsg when draining. */
#define DRAIN_CHUNK 64

enum {
  S_RECEIVED, S_BATCHES, S_TRUNCATED, S_RECV_ERRORS, S_SENT, S_SEND_CALLS, S_SEND_ERRORS, S_QUEUED, S_DROPPED, S_COUNT
};
static const char *const STAT_NAMES[S_COUNT] = {
  "received", "batches", "truncated", "receiveErrors", "sent", "sendCalls", "sendErrors", "queued", "dropped",
};

typedef struct {
  struct sockaddr_storage to;
  socklen_t tolen;
  uint32_t len;
  unsigned char data[];
} pending_t;

typedef struct {
  napi_env env;
  int fd;
  int family;
  int v6only;
  uv_poll_t poll;
  int events;
  int polling;
  int closing;
  int closed;
  int finalized;
  int tearing_down;
  napi_ref self;
  napi_ref on_batch;
  napi_ref on_error;
  napi_ref on_close;
  napi_ref in_data, in_meta, out_data, out_meta;
  napi_async_context async;
  napi_async_cleanup_hook_handle cleanup;
  uint32_t batch, slot, out_capacity;
  /** Datagrams in rnames from the last read: sourceText() may ask for these only. */
  uint32_t last_count;
  struct mmsghdr *rmsgs;
  struct iovec *riov;
  struct sockaddr_storage *rnames;
  struct mmsghdr *smsgs;
  struct iovec *siov;
  struct sockaddr_storage *snames;
  pending_t **pending;
  uint32_t pending_head, pending_count, pending_cap;
  double stats[S_COUNT];
} sock_t;

static const napi_type_tag SOCK_TAG = {0x70726976646e7362ULL, 0x617463685f756470ULL};

#define CHECK(call)                                                                 \
  do {                                                                              \
    if ((call) != napi_ok) {                                                        \
      const napi_extended_error_info *info_ = NULL;                                 \
      napi_get_last_error_info(env, &info_);                                        \
      bool pending_;                                                                \
      napi_is_exception_pending(env, &pending_);                                    \
      if (!pending_)                                                                \
        napi_throw_error(env, NULL, info_ && info_->error_message ? info_->error_message : "N-API call failed"); \
      return NULL;                                                                  \
    }                                                                               \
  } while (0)

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

/** An Error like Node's system errors: message "syscall CODE detail", .code, .errno, .syscall. */
static napi_value sys_error(napi_env env, const char *syscall, int err, const char *detail) {
  const char *code = uv_err_name(uv_translate_sys_error(err));
  char msg[256];
  snprintf(msg, sizeof msg, "%s %s%s%s", syscall, code, detail ? " " : "", detail ? detail : "");
  napi_value vcode, vmsg, error, verrno, vsys;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &vcode) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &vmsg) != napi_ok) return NULL;
  if (napi_create_error(env, vcode, vmsg, &error) != napi_ok) return NULL;
  napi_create_int32(env, -err, &verrno);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &vsys);
  napi_set_named_property(env, error, "errno", verrno);
  napi_set_named_property(env, error, "syscall", vsys);
  return error;
}

static napi_value throw_sys(napi_env env, const char *syscall, int err, const char *detail) {
  napi_value e = sys_error(env, syscall, err, detail);
  if (e != NULL) napi_throw(env, e);
  return NULL;
}

/** A whole number in [lo, hi] from a JS number, or an exception thrown. */
static int get_uint(napi_env env, napi_value v, const char *what, double lo, double hi, uint32_t *out) {
  napi_valuetype t;
  char msg[128];
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    snprintf(msg, sizeof msg, "%s must be a number", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return 0;
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!(d >= lo && d <= hi) || d != (double)(uint32_t)d) {
    snprintf(msg, sizeof msg, "%s must be a whole number from %.0f to %.0f", what, lo, hi);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return 0;
  }
  *out = (uint32_t)d;
  return 1;
}

/** The data and size of the ArrayBuffer behind a reference; 0 if it is detached. */
static int buffer_of(napi_env env, napi_ref ref, void **data, size_t *len) {
  napi_value ab;
  bool detached = true;
  if (napi_get_reference_value(env, ref, &ab) != napi_ok || ab == NULL) return 0;
  if (napi_is_detached_arraybuffer(env, ab, &detached) != napi_ok || detached) return 0;
  if (napi_get_arraybuffer_info(env, ab, data, len) != napi_ok) return 0;
  return *data != NULL || *len == 0;
}

/** The socket behind a handle object, or NULL with a TypeError thrown. */
static sock_t *unwrap(napi_env env, napi_value obj) {
  napi_valuetype t;
  bool ok = false;
  void *p = NULL;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, obj, &SOCK_TAG, &ok) != napi_ok || !ok ||
      napi_unwrap(env, obj, &p) != napi_ok || p == NULL) {
    throw_type(env, "not a batch UDP socket handle");
    return NULL;
  }
  return (sock_t *)p;
}

static void free_pending(sock_t *s) {
  if (s->pending == NULL) return;
  while (s->pending_count > 0) {
    free(s->pending[s->pending_head]);
    s->pending[s->pending_head] = NULL;
    s->pending_head = (s->pending_head + 1) % s->pending_cap;
    s->pending_count--;
  }
}

static void free_sock(sock_t *s) {
  free_pending(s);
  free(s->pending);
  free(s->rmsgs);
  free(s->riov);
  free(s->rnames);
  free(s->smsgs);
  free(s->siov);
  free(s->snames);
  free(s);
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref != NULL) napi_delete_reference(env, *ref);
  *ref = NULL;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void set_events(sock_t *s, int events) {
  if (s->closing || events == s->events) return;
  s->events = events;
  if (events == 0) uv_poll_stop(&s->poll);
  else uv_poll_start(&s->poll, events, on_poll);
}

/** Reports an error to JavaScript's onError (from an event loop callback). */
static void report_error(sock_t *s, const char *syscall, int err, const char *detail) {
  napi_env env = s->env;
  if (s->tearing_down || s->on_error == NULL) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, self, e, result;
  if (napi_get_reference_value(env, s->on_error, &fn) == napi_ok && fn != NULL &&
      napi_get_reference_value(env, s->self, &self) == napi_ok && self != NULL &&
      (e = sys_error(env, syscall, err, detail)) != NULL) {
    if (napi_make_callback(env, s->async, self, fn, 1, &e, &result) == napi_pending_exception) {
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex);
      napi_fatal_exception(env, ex);
    }
  }
  napi_close_handle_scope(env, scope);
}

/** The IPv4 address in a mapped IPv6 one (::ffff:a.b.c.d), or 0 if it is not one. */
static int unmap(const struct in6_addr *a, uint32_t *v4) {
  static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(a->s6_addr, prefix, 12) != 0) return 0;
  uint32_t w;
  memcpy(&w, a->s6_addr + 12, 4);
  *v4 = ntohl(w);
  return 1;
}

static void fill_source(uint32_t *m, const struct sockaddr_storage *ss) {
  m[M_SCOPE] = 0;
  m[M_ADDR + 1] = m[M_ADDR + 2] = m[M_ADDR + 3] = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    m[M_FAMILY] = 4;
    m[M_PORT] = ntohs(in->sin_port);
    m[M_ADDR] = ntohl(in->sin_addr.s_addr);
    return;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    uint32_t v4;
    m[M_PORT] = ntohs(in6->sin6_port);
    if (unmap(&in6->sin6_addr, &v4)) {
      m[M_FAMILY] = 4;
      m[M_FLAGS] |= FLAG_MAPPED;
      m[M_ADDR] = v4;
      return;
    }
    m[M_FAMILY] = 6;
    m[M_SCOPE] = in6->sin6_scope_id;
    for (int k = 0; k < 4; k++) {
      uint32_t w;
      memcpy(&w, in6->sin6_addr.s6_addr + 4 * k, 4);
      m[M_ADDR + k] = ntohl(w);
    }
    return;
  }
  // No address (an unbound sender on some families): reported as family 0, port 0.
  m[M_FAMILY] = 0;
  m[M_PORT] = 0;
  m[M_ADDR] = 0;
}

static void do_read(sock_t *s) {
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  void *data, *meta;
  size_t data_len, meta_len;
  if (!buffer_of(env, s->in_data, &data, &data_len) || !buffer_of(env, s->in_meta, &meta, &meta_len) ||
      data_len < (size_t)s->batch * s->slot || meta_len < (size_t)s->batch * META_WORDS * 4) {
    // The receive buffers were detached: nothing can be read into them any more.
    set_events(s, s->events & ~UV_READABLE);
    napi_close_handle_scope(env, scope);
    report_error(s, "recvmmsg", EFAULT, "(receive buffer detached)");
    return;
  }
  for (uint32_t i = 0; i < s->batch; i++) {
    s->riov[i].iov_base = (unsigned char *)data + (size_t)i * s->slot;
    s->riov[i].iov_len = s->slot;
    struct msghdr *h = &s->rmsgs[i].msg_hdr;
    h->msg_name = &s->rnames[i];
    h->msg_namelen = sizeof(struct sockaddr_storage);
    h->msg_iov = &s->riov[i];
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    s->rmsgs[i].msg_len = 0;
  }
  int n;
  do {
    n = recvmmsg(s->fd, s->rmsgs, s->batch, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    int err = errno;
    napi_close_handle_scope(env, scope);
    if (n < 0 && err != EAGAIN && err != EWOULDBLOCK) {
      s->stats[S_RECV_ERRORS]++;
      report_error(s, "recvmmsg", err, NULL);
    }
    return;
  }
  uint32_t *m = (uint32_t *)meta;
  for (int i = 0; i < n; i++, m += META_WORDS) {
    unsigned int len = s->rmsgs[i].msg_len;
    m[M_OFFSET] = (uint32_t)i * s->slot;
    m[M_LENGTH] = len > s->slot ? s->slot : len;
    m[M_FLAGS] = 0;
    if (s->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      m[M_FLAGS] |= FLAG_TRUNC;
      s->stats[S_TRUNCATED]++;
    }
    fill_source(m, &s->rnames[i]);
  }
  s->last_count = (uint32_t)n;
  s->stats[S_RECEIVED] += n;
  s->stats[S_BATCHES]++;
  napi_value fn, self, count, result;
  if (napi_get_reference_value(env, s->on_batch, &fn) == napi_ok && fn != NULL &&
      napi_get_reference_value(env, s->self, &self) == napi_ok && self != NULL &&
      napi_create_uint32(env, (uint32_t)n, &count) == napi_ok) {
    if (napi_make_callback(env, s->async, self, fn, 1, &count, &result) == napi_pending_exception) {
      // As for an exception thrown by a dgram 'message' listener: uncaughtException.
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex);
      napi_fatal_exception(env, ex);
    }
  }
  napi_close_handle_scope(env, scope);
}

static int drain_pending(sock_t *s);

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = (sock_t *)h->data;
  if (s->closing) return;
  if (status < 0) {
    report_error(s, "poll", -status, NULL);
    return;
  }
  if (events & UV_WRITABLE) {
    drain_pending(s);
    if (s->closing) return;
    if (s->pending_count == 0) set_events(s, s->events & ~UV_WRITABLE);
  }
  if ((events & UV_READABLE) && !s->closing) do_read(s);
}

/** Transient send failures, after which the same datagram may go later. */
static int try_later(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ENOMEM; }

static void enqueue(sock_t *s, const struct msghdr *h) {
  if (s->pending_count >= s->pending_cap) {
    s->stats[S_DROPPED]++;
    return;
  }
  size_t len = h->msg_iov[0].iov_len;
  pending_t *p = (pending_t *)malloc(sizeof(pending_t) + (len > 0 ? len : 1));
  if (p == NULL) {
    s->stats[S_DROPPED]++;
    return;
  }
  memcpy(&p->to, h->msg_name, h->msg_namelen);
  p->tolen = h->msg_namelen;
  p->len = (uint32_t)len;
  if (len > 0) memcpy(p->data, h->msg_iov[0].iov_base, len);
  s->pending[(s->pending_head + s->pending_count) % s->pending_cap] = p;
  s->pending_count++;
  s->stats[S_QUEUED]++;
}

/** Sends queued replies oldest first; returns how many went. Stops at EAGAIN. */
static int drain_pending(sock_t *s) {
  int total = 0;
  while (s->pending_count > 0) {
    struct mmsghdr msgs[DRAIN_CHUNK];
    struct iovec iov[DRAIN_CHUNK];
    uint32_t k = s->pending_count < DRAIN_CHUNK ? s->pending_count : DRAIN_CHUNK;
    for (uint32_t i = 0; i < k; i++) {
      pending_t *p = s->pending[(s->pending_head + i) % s->pending_cap];
      iov[i].iov_base = p->data;
      iov[i].iov_len = p->len;
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_name = &p->to;
      msgs[i].msg_hdr.msg_namelen = p->tolen;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(s->fd, msgs, k, MSG_DONTWAIT);
    s->stats[S_SEND_CALLS]++;
    int done;
    if (r > 0) {
      done = r;
      s->stats[S_SENT] += r;
      total += r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && try_later(errno)) {
      break;
    } else {
      // This one the kernel refuses (EMSGSIZE, EPERM, ENETUNREACH...): dropped, next.
      done = 1;
      s->stats[S_SEND_ERRORS]++;
    }
    for (int i = 0; i < done; i++) {
      free(s->pending[s->pending_head]);
      s->pending[s->pending_head] = NULL;
      s->pending_head = (s->pending_head + 1) % s->pending_cap;
      s->pending_count--;
    }
  }
  return total;
}

/** Builds the destination of reply entry m into ss; 0 with a RangeError thrown if invalid. */
static int destination(napi_env env, sock_t *s, uint32_t idx, const uint32_t *m, struct sockaddr_storage *ss, socklen_t *len) {
  char msg[160];
  uint32_t fam = m[M_FAMILY], port = m[M_PORT];
  if (port == 0 || port > 65535) {
    snprintf(msg, sizeof msg, "reply %u: port must be from 1 to 65535 (got %u)", idx, port);
    throw_range(env, msg);
    return 0;
  }
  memset(ss, 0, sizeof *ss);
  if (fam == 4) {
    if (s->family == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)ss;
      in->sin_family = AF_INET;
      in->sin_port = htons((uint16_t)port);
      in->sin_addr.s_addr = htonl(m[M_ADDR]);
      *len = sizeof *in;
      return 1;
    }
    if (s->v6only) {
      snprintf(msg, sizeof msg, "reply %u: an IPv4 destination on an IPv6-only socket", idx);
      throw_range(env, msg);
      return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    in6->sin6_addr.s6_addr[10] = 0xff;
    in6->sin6_addr.s6_addr[11] = 0xff;
    uint32_t w = htonl(m[M_ADDR]);
    memcpy(in6->sin6_addr.s6_addr + 12, &w, 4);
    *len = sizeof *in6;
    return 1;
  }
  if (fam == 6) {
    struct in6_addr a;
    for (int k = 0; k < 4; k++) {
      uint32_t w = htonl(m[M_ADDR + k]);
      memcpy(a.s6_addr + 4 * k, &w, 4);
    }
    if (s->family == AF_INET) {
      uint32_t v4;
      if (!unmap(&a, &v4)) {
        snprintf(msg, sizeof msg, "reply %u: an IPv6 destination on an IPv4 socket", idx);
        throw_range(env, msg);
        return 0;
      }
      struct sockaddr_in *in = (struct sockaddr_in *)ss;
      in->sin_family = AF_INET;
      in->sin_port = htons((uint16_t)port);
      in->sin_addr.s_addr = htonl(v4);
      *len = sizeof *in;
      return 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    in6->sin6_addr = a;
    in6->sin6_scope_id = m[M_SCOPE];
    *len = sizeof *in6;
    return 1;
  }
  snprintf(msg, sizeof msg, "reply %u: family must be 4 or 6 (got %u)", idx, fam);
  throw_range(env, msg);
  return 0;
}

// send(handle, count): sends reply entries 0..count-1 of the output table. Returns how many
// went now; the rest were queued (or dropped past the queue's bound, counted in stats).
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_type(env, "send(handle, count)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->closing) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "send on a closed socket");
    return NULL;
  }
  uint32_t count;
  if (!get_uint(env, argv[1], "count", 0, s->out_capacity, &count)) return NULL;
  void *data, *meta;
  size_t data_len, meta_len;
  if (!buffer_of(env, s->out_data, &data, &data_len) || !buffer_of(env, s->out_meta, &meta, &meta_len) ||
      meta_len < (size_t)s->out_capacity * META_WORDS * 4)
    return throw_type(env, "the reply buffers were detached");
  const uint32_t *m = (const uint32_t *)meta;
  char msg[160];
  for (uint32_t i = 0; i < count; i++, m += META_WORDS) {
    uint32_t off = m[M_OFFSET], len = m[M_LENGTH];
    if (len > MAX_DATAGRAM) {
      snprintf(msg, sizeof msg, "reply %u: length must be at most %d (got %u)", i, MAX_DATAGRAM, len);
      return throw_range(env, msg);
    }
    if (off > data_len || len > data_len - off) {
      snprintf(msg, sizeof msg, "reply %u: bytes %u..%u are outside the %zu-byte reply buffer", i, off, off + len, data_len);
      return throw_range(env, msg);
    }
    socklen_t alen;
    if (!destination(env, s, i, m, &s->snames[i], &alen)) return NULL;
    s->siov[i].iov_base = (unsigned char *)data + off;
    s->siov[i].iov_len = len;
    struct msghdr *h = &s->smsgs[i].msg_hdr;
    memset(h, 0, sizeof *h);
    h->msg_name = &s->snames[i];
    h->msg_namelen = alen;
    h->msg_iov = &s->siov[i];
    h->msg_iovlen = 1;
  }
  uint32_t sent = 0, i = 0;
  // Older replies first: while some wait for the socket, new ones queue behind them.
  if (s->pending_count > 0) sent += (uint32_t)drain_pending(s);
  if (s->pending_count == 0) {
    while (i < count) {
      int r = sendmmsg(s->fd, &s->smsgs[i], count - i, MSG_DONTWAIT);
      s->stats[S_SEND_CALLS]++;
      if (r > 0) {
        i += (uint32_t)r;
        sent += (uint32_t)r;
        s->stats[S_SENT] += r;
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else if (r < 0 && try_later(errno)) {
        break;
      } else {
        s->stats[S_SEND_ERRORS]++;
        i++;
      }
    }
  }
  for (; i < count; i++) enqueue(s, &s->smsgs[i].msg_hdr);
  if (s->pending_count > 0) set_events(s, s->events | UV_WRITABLE);
  napi_value out;
  CHECK(napi_create_uint32(env, sent, &out));
  return out;
}

static void call_close_callback(sock_t *s) {
  napi_env env = s->env;
  if (s->tearing_down || s->on_close == NULL) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, result;
  // The handle as `this` (make_callback wants an object); it is still referenced here.
  if (napi_get_reference_value(env, s->on_close, &fn) == napi_ok && fn != NULL &&
      napi_get_reference_value(env, s->self, &recv) == napi_ok && recv != NULL) {
    if (napi_make_callback(env, s->async, recv, fn, 0, NULL, &result) == napi_pending_exception) {
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex);
      napi_fatal_exception(env, ex);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_closed(uv_handle_t *h) {
  sock_t *s = (sock_t *)h->data;
  napi_env env = s->env;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  s->closed = 1;
  free_pending(s);
  call_close_callback(s);
  delete_ref(env, &s->on_batch);
  delete_ref(env, &s->on_error);
  delete_ref(env, &s->on_close);
  delete_ref(env, &s->in_data);
  delete_ref(env, &s->in_meta);
  delete_ref(env, &s->out_data);
  delete_ref(env, &s->out_meta);
  if (s->async != NULL) napi_async_destroy(env, s->async);
  s->async = NULL;
  if (s->cleanup != NULL) napi_remove_async_cleanup_hook(s->cleanup);
  s->cleanup = NULL;
  int finalized = s->finalized;
  // From here the handle object may be collected; its finalizer frees what is left.
  delete_ref(env, &s->self);
  if (finalized) free_sock(s);
}

static void start_close(sock_t *s) {
  if (s->closing) return;
  s->closing = 1;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

/** The environment is going away (process exit, worker thread end): close without JS. */
static void cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  sock_t *s = (sock_t *)arg;
  s->tearing_down = 1;
  start_close(s);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  sock_t *s = (sock_t *)data;
  if (s->closed) free_sock(s);
  else s->finalized = 1;  // on_closed frees it
}

// close(handle, callback?): stops reading, closes the socket; callback runs once it is closed.
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_type(env, "close(handle, callback?)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  napi_valuetype t = napi_undefined;
  if (argc >= 2) {
    CHECK(napi_typeof(env, argv[1], &t));
    if (t != napi_function && t != napi_undefined) return throw_type(env, "callback must be a function");
  }
  // As dgram's close(): a second close is an error, so no callback waits for nothing.
  if (s->closing) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the socket is already closed");
    return NULL;
  }
  if (t == napi_function) CHECK(napi_create_reference(env, argv[1], 1, &s->on_close));
  start_close(s);
  return NULL;
}

static napi_value make_address(napi_env env, const struct sockaddr_storage *ss) {
  char text[INET6_ADDRSTRLEN + 1] = "";
  int port = 0;
  const char *family = "IPv4";
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    port = ntohs(in->sin_port);
  } else {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    port = ntohs(in6->sin6_port);
    family = "IPv6";
  }
  napi_value obj, va, vf, vp;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &va));
  CHECK(napi_create_string_utf8(env, family, NAPI_AUTO_LENGTH, &vf));
  CHECK(napi_create_int32(env, port, &vp));
  CHECK(napi_set_named_property(env, obj, "address", va));
  CHECK(napi_set_named_property(env, obj, "family", vf));
  CHECK(napi_set_named_property(env, obj, "port", vp));
  return obj;
}

static napi_value js_address(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_type(env, "address(handle)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->closing) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "address of a closed socket");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(s->fd, (struct sockaddr *)&ss, &len) != 0) return throw_sys(env, "getsockname", errno, NULL);
  return make_address(env, &ss);
}

// sourceText(handle, i): the source of datagram i of the last batch as text, the way
// node:dgram reports it (inet_ntop: an IPv4-mapped source reads ::ffff:a.b.c.d).
static napi_value js_source_text(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_type(env, "sourceText(handle, index)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  uint32_t i;
  if (s->last_count == 0) return throw_range(env, "no datagram has been read");
  if (!get_uint(env, argv[1], "index", 0, s->last_count - 1, &i)) return NULL;
  const struct sockaddr_storage *ss = &s->rnames[i];
  char text[INET6_ADDRSTRLEN + 1] = "";
  if (ss->ss_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, text, sizeof text);
  else if (ss->ss_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, text, sizeof text);
  napi_value out;
  CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_type(env, "stats(handle)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  napi_value obj, v;
  CHECK(napi_create_object(env, &obj));
  for (int k = 0; k < S_COUNT; k++) {
    CHECK(napi_create_double(env, s->stats[k], &v));
    CHECK(napi_set_named_property(env, obj, STAT_NAMES[k], v));
  }
  CHECK(napi_create_uint32(env, s->pending_count, &v));
  CHECK(napi_set_named_property(env, obj, "pending", v));
  return obj;
}

static napi_value js_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_type(env, "ref(handle, boolean)");
  sock_t *s = unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  bool on;
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) return throw_type(env, "ref(handle, boolean)");
  if (!s->closing) {
    if (on) uv_ref((uv_handle_t *)&s->poll);
    else uv_unref((uv_handle_t *)&s->poll);
  }
  return NULL;
}

/** An ArrayBuffer argument of at least `need` bytes, referenced into *ref. */
static int take_buffer(napi_env env, napi_value v, const char *what, size_t need, napi_ref *ref) {
  bool is_ab = false;
  char msg[160];
  if (napi_is_arraybuffer(env, v, &is_ab) != napi_ok || !is_ab) {
    snprintf(msg, sizeof msg, "%s must be an ArrayBuffer", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return 0;
  }
  void *data;
  size_t len;
  bool detached = false;
  napi_is_detached_arraybuffer(env, v, &detached);
  if (detached || napi_get_arraybuffer_info(env, v, &data, &len) != napi_ok || len < need) {
    snprintf(msg, sizeof msg, "%s must hold at least %zu bytes", what, need);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return 0;
  }
  return napi_create_reference(env, v, 1, ref) == napi_ok;
}

static int is_function(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == napi_function;
}

// open(host, port, batch, slot, ipv6Only, recvBuffer, sendBuffer, inData, inMeta, outData,
//      outMeta, maxPending, onBatch, onError): a bound socket's handle, reading at once.
// inData holds batch slots of `slot` bytes; the meta buffers batch (in) and outData.length/..
// entries (out: outMeta.byteLength / 40) of META_WORDS words.
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value argv[14];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 14) return throw_type(env, "open() takes 14 arguments");
  char host[INET6_ADDRSTRLEN + 64];
  size_t host_len;
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[0], &t));
  if (t != napi_string) return throw_type(env, "host must be a string");
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &host_len));
  if (host_len == 0 || host_len >= sizeof host - 1) return throw_range(env, "host must be an IP address");
  uint32_t port, batch, slot, rcvbuf, sndbuf, max_pending;
  if (!get_uint(env, argv[1], "port", 0, 65535, &port)) return NULL;
  if (!get_uint(env, argv[2], "batch", 1, MAX_BATCH, &batch)) return NULL;
  if (!get_uint(env, argv[3], "slot", 1, MAX_SLOT, &slot)) return NULL;
  bool v6only;
  if (napi_get_value_bool(env, argv[4], &v6only) != napi_ok) return throw_type(env, "ipv6Only must be a boolean");
  if (!get_uint(env, argv[5], "recvBuffer", 0, 1 << 30, &rcvbuf)) return NULL;
  if (!get_uint(env, argv[6], "sendBuffer", 0, 1 << 30, &sndbuf)) return NULL;
  if (!get_uint(env, argv[11], "maxPending", 1, 1 << 20, &max_pending)) return NULL;
  if (!is_function(env, argv[12]) || !is_function(env, argv[13])) return throw_type(env, "onBatch and onError must be functions");
  bool is_ab;
  void *odata;
  size_t olen;
  CHECK(napi_is_arraybuffer(env, argv[10], &is_ab));
  if (!is_ab) return throw_type(env, "outMeta must be an ArrayBuffer");
  CHECK(napi_get_arraybuffer_info(env, argv[10], &odata, &olen));
  uint32_t out_capacity = (uint32_t)(olen / (META_WORDS * 4) > MAX_BATCH * 16 ? MAX_BATCH * 16 : olen / (META_WORDS * 4));
  if (out_capacity == 0) return throw_range(env, "outMeta must hold at least one entry");

  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
    if (res) freeaddrinfo(res);
    return throw_range(env, "host must be an IPv4 or IPv6 address literal");
  }
  struct sockaddr_storage bind_addr;
  socklen_t bind_len = (socklen_t)res->ai_addrlen;
  memcpy(&bind_addr, res->ai_addr, res->ai_addrlen);
  int family = res->ai_family;
  freeaddrinfo(res);
  if (family == AF_INET) ((struct sockaddr_in *)&bind_addr)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)&bind_addr)->sin6_port = htons((uint16_t)port);

  sock_t *s = (sock_t *)calloc(1, sizeof(sock_t));
  if (s == NULL) return throw_sys(env, "open", ENOMEM, NULL);
  s->env = env;
  s->fd = -1;
  s->family = family;
  s->v6only = family == AF_INET6 && v6only;
  s->batch = batch;
  s->slot = slot;
  s->out_capacity = out_capacity;
  s->pending_cap = max_pending;
  s->rmsgs = calloc(batch, sizeof(struct mmsghdr));
  s->riov = calloc(batch, sizeof(struct iovec));
  s->rnames = calloc(batch, sizeof(struct sockaddr_storage));
  s->smsgs = calloc(out_capacity, sizeof(struct mmsghdr));
  s->siov = calloc(out_capacity, sizeof(struct iovec));
  s->snames = calloc(out_capacity, sizeof(struct sockaddr_storage));
  s->pending = calloc(max_pending, sizeof(pending_t *));
  if (!s->rmsgs || !s->riov || !s->rnames || !s->smsgs || !s->siov || !s->snames || !s->pending) {
    free_sock(s);
    return throw_sys(env, "open", ENOMEM, NULL);
  }
  if (!take_buffer(env, argv[7], "inData", (size_t)batch * slot, &s->in_data) ||
      !take_buffer(env, argv[8], "inMeta", (size_t)batch * META_WORDS * 4, &s->in_meta) ||
      !take_buffer(env, argv[9], "outData", 0, &s->out_data) ||
      !take_buffer(env, argv[10], "outMeta", (size_t)out_capacity * META_WORDS * 4, &s->out_meta))
    goto fail_refs;

  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_sys(env, "socket", errno, NULL);
    goto fail_refs;
  }
  s->fd = fd;
  int one = 1;
  char detail[INET6_ADDRSTRLEN + 80];
  snprintf(detail, sizeof detail, "%s%s%s:%u", family == AF_INET6 ? "[" : "", host, family == AF_INET6 ? "]" : "", port);
  // Each DNS process opens its own socket on the port; the kernel spreads datagrams over them.
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    throw_sys(env, "setsockopt", errno, "SO_REUSEPORT");
    goto fail_fd;
  }
  if (family == AF_INET6) {
    int v = s->v6only ? 1 : 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) != 0) {
      throw_sys(env, "setsockopt", errno, "IPV6_V6ONLY");
      goto fail_fd;
    }
  }
  // Best effort, as dgram's setRecvBufferSize: the kernel caps them at net.core.[rw]mem_max.
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (bind(fd, (struct sockaddr *)&bind_addr, bind_len) != 0) {
    throw_sys(env, "bind", errno, detail);
    goto fail_fd;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init_socket(loop, &s->poll, fd) != 0) {
    napi_throw_error(env, NULL, "cannot watch the socket on the event loop");
    goto fail_fd;
  }
  s->poll.data = s;
  // From here on the poll handle exists, so failures must go through uv_close.
  napi_value handle, name;
  bool wrapped = false;
  if (napi_create_object(env, &handle) != napi_ok || napi_type_tag_object(env, handle, &SOCK_TAG) != napi_ok ||
      napi_wrap(env, handle, s, finalize, NULL, NULL) != napi_ok || !(wrapped = true) ||
      napi_create_reference(env, handle, 1, &s->self) != napi_ok ||
      napi_create_reference(env, argv[12], 1, &s->on_batch) != napi_ok ||
      napi_create_reference(env, argv[13], 1, &s->on_error) != napi_ok ||
      napi_create_string_utf8(env, "privdns:BatchUdpSocket", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, handle, name, &s->async) != napi_ok ||
      napi_add_async_cleanup_hook(env, cleanup_hook, s, &s->cleanup) != napi_ok) {
    // Unusual (out of memory): the half-made handle is closed; once both its close and (if it
    // was wrapped) its finalizer have run, it is freed.
    if (!wrapped) s->finalized = 1;
    start_close(s);
    bool pending;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, "cannot create the socket handle");
    return NULL;
  }
  s->events = UV_READABLE;
  uv_poll_start(&s->poll, UV_READABLE, on_poll);
  return handle;

fail_fd:
  close(s->fd);
  s->fd = -1;
fail_refs:
  delete_ref(env, &s->in_data);
  delete_ref(env, &s->in_meta);
  delete_ref(env, &s->out_data);
  delete_ref(env, &s->out_meta);
  free_sock(s);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"open", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"send", NULL, js_send, NULL, NULL, NULL, napi_enumerable, NULL},
    {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
    {"address", NULL, js_address, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sourceText", NULL, js_source_text, NULL, NULL, NULL, napi_enumerable, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  napi_value v;
  CHECK(napi_create_uint32(env, META_WORDS, &v));
  CHECK(napi_set_named_property(env, exports, "META_WORDS", v));
  CHECK(napi_create_uint32(env, MAX_BATCH, &v));
  CHECK(napi_set_named_property(env, exports, "MAX_BATCH", v));
  CHECK(napi_create_uint32(env, MAX_SLOT, &v));
  CHECK(napi_set_named_property(env, exports, "MAX_SLOT", v));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
