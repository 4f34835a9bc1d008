/*
 * tcpchurn.load._pump: the engine's per-connection hot path in C.
 *
 * Why C: on a 2-core machine the generator and the server share the CPU, so every
 * microsecond the generator spends per connection is taken from the server.  The
 * pure-Python engine (conn.py) spends ~6 us of user CPU per connection, of which a
 * minimal Python loop with the same syscalls still needs ~3.8 us (socket objects,
 * argument parsing, the GIL dropped and taken around every syscall); wrk spends ~1.6 us.
 * Against nginx on loopback that gap alone is the difference between 0.84-0.94 of wrk's
 * rate and more than wrk's (bench/ceiling.py; docs/run.md "Keeping the schedule").
 *
 * What is here is ONLY the common path of a connection.  --mode http: socket, [bind],
 * connect, send, register with the engine's epoll (edge-triggered, one registration),
 * recv, and, when the bytes equal the last response that the Python code judged
 * complete, close and record the five timestamps.  --mode tcp: socket, [bind], connect,
 * and once connected close (--close client|reset; on loopback connect() returns
 * connected, so no registration at all) or wait for the server's FIN (--close server).
 * Everything else -- an error, a response that differs, a
 * timeout -- is *exported*: the connection, with what it has read, is handed to the
 * Python engine (conn.py), which stays the one place where responses are judged and
 * errors named, and which owns the connection from then on.  So the two engines cannot
 * disagree on a verdict; tests run both against the same servers.
 *
 * The syscall sequence is conn.py's (see its comments for the kernel reasons), plus the
 * receive stamps: socket(NONBLOCK), setsockopt(SO_TIMESTAMPNS) (--mode http),
 * [setsockopt(IP_BIND_ADDRESS_NO_PORT), bind], connect, send (on
 * loopback the handshake is done inside connect()), epoll_ctl(ADD, IN|RDHUP|ET), one
 * recvmsg (for the kernel's receive stamp: SO_TIMESTAMPNS) when the response and the
 * FIN came together, close.
 *
 * Single-threaded by design (one engine per worker process): the GIL is held except
 * around the blocking epoll_wait and run()'s sleep on the timer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* include/uapi/linux/in.h, Linux 4.2 */
#endif

/* conn.py's states; FREE: the slot holds no connection of ours */
#define CONNECTING 0
#define READING 1
#define FREE (-1)

/* what the Python engine must do with an exported connection (engine.py) */
#define ACT_EVENT 0  /* serve this epoll event as conn.py would: nothing was done with it */
#define ACT_FAIL 1   /* finish it with error `err` (send() failed after the connect) */
#define ACT_JUDGE 2  /* judge what was read (buf, eof; `err` a recv() error or 0) */
#define ACT_EXPIRE 3 /* it outlived --timeout */

#define CLOSE_SERVER 0
#define CLOSE_CLIENT 1
#define CLOSE_RESET 2

/* the latency histograms, in stats.HISTOGRAMS' order: from the schedule, then from the
   actual start (Pump.bind) */
#define NHIST 7
#define H_CONNECT 0
#define H_TTFB 1
#define H_TOTAL 2
#define H_LAG 3
#define H_ACTUAL 4 /* + H_CONNECT, H_TTFB, H_TOTAL */

#define RECV_SIZE 65536
#define MISSING (-1.0)

#ifndef SO_TIMESTAMPNS
#define SO_TIMESTAMPNS 35 /* include/uapi/asm-generic/socket.h: SO_TIMESTAMPNS_OLD */
#endif
#ifndef SCM_TIMESTAMPNS
#define SCM_TIMESTAMPNS SO_TIMESTAMPNS
#endif

typedef struct {
    double sched, start, conn_t, ttfb;
    double rx; /* when the last bytes read arrived: the kernel's stamp (MISSING: none) */
    char *buf;
    Py_ssize_t len, cap;
    int state;
    int eof;
    int prev, next; /* the live list in start order (fds; -1: none) */
} Conn;

/* one HdrHistogram's counts (hdrh's ctypes array, written in place) and what its Python
   object must add at the next take(): the count, min and max of what was recorded */
typedef struct {
    Py_buffer view;
    uint64_t *counts;
    Py_ssize_t len;
    long long total;
    long long min, max;
} Hist;

/* One worker's lane of the schedule, in memory shared by all the run's workers (a
   memfd mapped by each: workers.py).  The owner writes the due times of its slots
   (push); a slot is taken -- started or skipped -- by whoever moves `taken` past it with
   a compare-and-swap: the owner when it is due, another worker when it is more than
   `steal_lag` overdue.  Why: this VM's host stalls one vCPU at a time (2-10 ms, ~1/s on
   one, every 5.12 s on the other; never both at once in 41 stalls traced: docs/run.md
   "Keeping the schedule"), and a stalled worker's slots then all start late; the other
   worker, awake on its own schedule, starts them instead.
   Safety without locks: `taken` only grows (no ABA); the owner rewrites the cell of
   slot j + LANE_RING only once `taken` > j, so a taker that read a cell that was being
   reused fails its compare-and-swap and looks again.  Seq numbers stay the schedule's:
   slot j of lane w is connection w + j * lanes, whoever starts it. */
#define LANE_RING 4096 /* ~140 ms of a worker's share at 30,000/s: 32 KiB a lane */
typedef struct {
    uint64_t taken; /* slots taken (started or skipped), by anyone */
    char pad0[56];  /* own cache lines: takers write `taken`, only the owner `filled` */
    uint64_t filled; /* slots whose due time is written */
    char pad1[56];
    double ring[LANE_RING]; /* slot j's due time (seconds from the start) at j % LANE_RING */
} Lane;

typedef struct {
    PyObject_HEAD
    int epfd;
    int af;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct sockaddr_storage *sources;
    socklen_t *srclens;
    Py_ssize_t nsources;
    char *req;
    Py_ssize_t reqlen;
    int close_mode;
    int http; /* --mode http; 0: bare tcp (connect, then close as --close says) */
    double start_at;
    PyObject *ok[2]; /* bytes: the last complete response, without / with the FIN */
    Conn *conns;
    int cap;
    int head, tail, live;
    double *rows;
    Py_ssize_t nrows, rowcap; /* rows of five doubles */
    long long attempted, late, ok_count;
    double late_s;
    double ev_cost; /* seconds to serve one event, smoothed (Pump_poll) */
    char *rbuf;
    struct epoll_event *events;
    int maxevents;
    /* Pump.run's pacing (Pump.pace; engine.py's constants) */
    double timeout, skip_lag, grid, spin;
    int max_inflight, batch;
    int timer_fd;    /* the engine's timerfd: run() arms it and consumes its expiries */
    int coalesce;    /* Pump.pace: sleep on the timer alone when a start is a step away */
    int connecting;  /* connections of ours whose handshake is not done (CONNECTING) */
    double rt_off;   /* CLOCK_REALTIME - CLOCK_MONOTONIC: turns a receive stamp into ours */
    long long naps;  /* run()'s sleeps on the timer alone (coalesced wake-ups) */
    Py_ssize_t buffered; /* bytes of the slots' buffers (serve(): most have none) */
    double armed_at; /* when it is armed for (seconds from the start; -1: not armed) */
    int in_run;      /* serve_all swallows the timer's events only inside run() */
    /* Pump.bind: finished connections go straight into these histograms, not into rows */
    int bound;
    Hist hist[NHIST];
    int unit_mag, half_mag;
    long long half_count, sub_mask, highest;
    /* Pump.share: the lanes of all workers (lanes[lane] is ours) */
    int shared;
    Py_buffer board;
    Lane *lanes;
    int nlanes, lane;
    double steal_lag;     /* Pump.pace: another lane's slot this overdue is ours to take */
    long long taken_over; /* slots of other lanes that we started, since take() */
} Pump;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* what time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC, now.  A receive stamp (SO_TIMESTAMPNS) is on the
   wall clock; minus this it is on ours.  NTP slews both clocks alike, so only a step of
   the wall clock moves it: it is read again at every run() and poll() */
static double rt_offset(void) {
    struct timespec m, r;
    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &r);
    return (double)(r.tv_sec - m.tv_sec) + (double)(r.tv_nsec - m.tv_nsec) * 1e-9;
}

static int parse_addr(PyObject *tuple, int af, struct sockaddr_storage *out, socklen_t *len) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(tuple, "si", &host, &port)) return -1;
    memset(out, 0, sizeof *out);
    if (af == AF_INET) {
        struct sockaddr_in *sa = (struct sockaddr_in *)out;
        sa->sin_family = AF_INET;
        sa->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) goto bad;
        *len = sizeof *sa;
    } else {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)out;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1) goto bad;
        *len = sizeof *sa;
    }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not an IPv%d literal: %s", af == AF_INET ? 4 : 6, host);
    return -1;
}

static void unbind(Pump *self) {
    if (!self->bound) return;
    for (int h = 0; h < NHIST; h++) PyBuffer_Release(&self->hist[h].view);
    self->bound = 0;
}

static void Pump_dealloc(Pump *self) {
    unbind(self);
    if (self->shared) PyBuffer_Release(&self->board);
    if (self->conns) {
        for (int fd = 0; fd < self->cap; fd++) free(self->conns[fd].buf);
        free(self->conns);
    }
    free(self->sources);
    free(self->srclens);
    free(self->req);
    free(self->rows);
    free(self->rbuf);
    free(self->events);
    Py_XDECREF(self->ok[0]);
    Py_XDECREF(self->ok[1]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Pump_init(Pump *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"epfd", "af", "addr", "sources", "request", "close_mode",
                             "start_at", "late_s", "maxevents", "http", NULL};
    PyObject *addr, *sources;
    Py_buffer req;
    self->http = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOy*iddi|p", kwlist, &self->epfd,
                                     &self->af, &addr, &sources, &req, &self->close_mode,
                                     &self->start_at, &self->late_s, &self->maxevents,
                                     &self->http))
        return -1;
    self->req = malloc((size_t)req.len);
    if (!self->req) {
        PyBuffer_Release(&req);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(self->req, req.buf, (size_t)req.len);
    self->reqlen = req.len;
    PyBuffer_Release(&req);
    if (parse_addr(addr, self->af, &self->addr, &self->addrlen) < 0) return -1;
    PyObject *seq = PySequence_Fast(sources, "sources must be a sequence of (ip, 0)");
    if (!seq) return -1;
    self->nsources = PySequence_Fast_GET_SIZE(seq);
    if (self->nsources) {
        self->sources = calloc((size_t)self->nsources, sizeof *self->sources);
        self->srclens = calloc((size_t)self->nsources, sizeof *self->srclens);
        if (!self->sources || !self->srclens) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < self->nsources; i++) {
            if (parse_addr(PySequence_Fast_GET_ITEM(seq, i), self->af, &self->sources[i],
                           &self->srclens[i]) < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
    }
    Py_DECREF(seq);
    self->ok[0] = PyBytes_FromStringAndSize("\0", 1); /* matches no response */
    self->ok[1] = PyBytes_FromStringAndSize("\0", 1);
    self->rbuf = malloc(RECV_SIZE);
    if (self->maxevents < 1) self->maxevents = 1;
    self->events = calloc((size_t)self->maxevents, sizeof *self->events);
    if (!self->ok[0] || !self->ok[1] || !self->rbuf || !self->events) {
        PyErr_NoMemory();
        return -1;
    }
    self->head = self->tail = -1;
    self->ev_cost = 10e-6;
    self->timer_fd = -1;
    self->armed_at = -1.0;
    return 0;
}

static int grow_conns(Pump *self, int fd) {
    if (fd < self->cap) return 0;
    int cap = self->cap ? self->cap : 1024;
    while (cap <= fd) cap *= 2;
    Conn *c = realloc(self->conns, (size_t)cap * sizeof *c);
    if (!c) return -1;
    for (int i = self->cap; i < cap; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].state = FREE;
        c[i].prev = c[i].next = -1;
    }
    self->conns = c;
    self->cap = cap;
    return 0;
}

static void link_tail(Pump *self, int fd) {
    Conn *c = &self->conns[fd];
    c->prev = self->tail;
    c->next = -1;
    if (self->tail >= 0) self->conns[self->tail].next = fd;
    else self->head = fd;
    self->tail = fd;
    self->live++;
}

/* forget the connection in slot fd (the fd itself is closed or handed over) */
static void release(Pump *self, int fd) {
    Conn *c = &self->conns[fd];
    if (c->prev >= 0) self->conns[c->prev].next = c->next;
    else self->head = c->next;
    if (c->next >= 0) self->conns[c->next].prev = c->prev;
    else self->tail = c->prev;
    c->prev = c->next = -1;
    if (c->state == CONNECTING) self->connecting--;
    c->state = FREE;
    /* no slot keeps a buffer: a response that came in one read never had one (serve()),
       and kept ones would hold the peak of in-flight after a stall for the rest of the
       run (a server stopped for 0.5 s at 10,000/s grew each worker by 3.2 MB for good:
       bench/soak.py) */
    c->len = 0;
    self->buffered -= c->cap;
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
    self->live--;
}

static int add_row(Pump *self, double a, double b, double c, double d, double e) {
    if (self->nrows == self->rowcap) {
        Py_ssize_t cap = self->rowcap ? self->rowcap * 2 : 4096;
        double *r = realloc(self->rows, (size_t)cap * 5 * sizeof *r);
        if (!r) return -1;
        self->rows = r;
        self->rowcap = cap;
    }
    double *r = self->rows + self->nrows * 5;
    r[0] = a; r[1] = b; r[2] = c; r[3] = d; r[4] = e;
    self->nrows++;
    return 0;
}

static void record_ok(Pump *self, Conn *c, double end);

/* start connection `seq` due at `sched`: 0, the errno that failed it before any event,
   or -1 with a Python error (no memory) */
static int start_one(Pump *self, long long seq, double sched, double now) {
    self->attempted++;
    if (now - sched > self->late_s) self->late++;
    int fd = socket(self->af, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return errno; /* EMFILE, ENFILE, ENOBUFS */
    int err;
    if (self->http) {
        /* the response's arrival from the kernel's receive stamp, not from when this loop
           got to it (a coalesced wake-up serves it up to a grid step later: run()).  On
           failure it is simply not stamped: serve() then takes its own clock */
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    }
    if (self->nsources) {
        /* defer the port to connect(), where the 4-tuple is known (conn.py, KERNEL.md §C) */
        int one = 1;
        Py_ssize_t i = (Py_ssize_t)(seq % self->nsources);
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&self->sources[i], self->srclens[i]) < 0)
            goto fail;
    }
    int state = CONNECTING;
    double conn_t = MISSING;
    if (connect(fd, (struct sockaddr *)&self->addr, self->addrlen) < 0 && errno != EINPROGRESS)
        goto fail;
    if (self->http) {
        /* send now: on loopback connect() returns with the handshake done; EAGAIN (or
           ENOTCONN) means SYN_SENT: wait for EPOLLOUT */
        if (send(fd, self->req, (size_t)self->reqlen, MSG_NOSIGNAL) >= 0) {
            conn_t = mono() - self->start_at;
            state = READING;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
            goto fail;
        }
    } else {
        /* bare tcp: is the handshake done already (loopback, above)?  getpeername() says
           ENOTCONN in SYN_SENT and in CLOSE (refused: the error event names it), so
           ENOTCONN waits for EPOLLOUT or the error, as a remote target's does */
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0) {
            double t = mono() - self->start_at;
            if (self->close_mode != CLOSE_SERVER) {
                /* connected is done: no epoll registration, no event, no slot */
                self->ok_count++;
                Conn one = {.sched = sched, .start = now, .conn_t = t, .ttfb = MISSING};
                if (self->close_mode == CLOSE_RESET) {
                    struct linger lg = {1, 0}; /* see finish_ok */
                    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                }
                close(fd);
                if (self->bound) record_ok(self, &one, t);
                else if (add_row(self, sched, now, t, MISSING, t) < 0) return -1;
                return 0;
            }
            conn_t = t;
            state = READING; /* --close server: wait for its FIN */
        } else if (errno != ENOTCONN) {
            goto fail;
        }
    }
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (state == CONNECTING ? EPOLLOUT : 0);
    ev.data.fd = fd;
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) goto fail; /* ENOSPC, ENOMEM */
    if (grow_conns(self, fd) < 0) {
        close(fd);
        PyErr_NoMemory();
        return -1;
    }
    Conn *c = &self->conns[fd];
    c->sched = sched;
    c->start = now;
    c->conn_t = conn_t;
    c->ttfb = MISSING;
    c->rx = MISSING;
    c->len = 0;
    c->eof = 0;
    c->state = state;
    if (state == CONNECTING) self->connecting++;
    link_tail(self, fd);
    return 0;
fail:
    err = errno;
    close(fd);
    return err;
}

/* Pump.start(seq, sched, now) -> 0, or the errno that failed it before any event */
static PyObject *Pump_start(Pump *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "start(seq, sched, now)");
        return NULL;
    }
    long long seq = PyLong_AsLongLong(args[0]);
    double sched = PyFloat_AsDouble(args[1]);
    double now = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) return NULL;
    int err = start_one(self, seq, sched, now);
    return err < 0 ? NULL : PyLong_FromLong(err);
}

static int matches(PyObject *ok, Conn *c);

/* (fd, ev, action, err, state, sched, start, conn_t, ttfb, buf, eof, done); the slot is
   freed, the fd stays open and registered: the Python engine owns it now.  done: when
   the response was complete before any FIN (its last bytes' arrival, if they are the
   last response that conn.py found complete without one; else MISSING), conn.Conn.done */
static int export(Pump *self, PyObject *list, int fd, uint32_t ev, int action, int err) {
    Conn *c = &self->conns[fd];
    double done = self->http && matches(self->ok[0], c) ? c->rx : MISSING;
    PyObject *t = Py_BuildValue("(iIiiiddddy#Od)", fd, ev, action, err, c->state, c->sched,
                                c->start, c->conn_t, c->ttfb, c->buf ? c->buf : "",
                                c->len, c->eof ? Py_True : Py_False, done);
    if (!t) return -1;
    int rc = PyList_Append(list, t);
    Py_DECREF(t);
    release(self, fd);
    return rc;
}

/* hdrh's HdrHistogram.record_value for `seconds`, in whole microseconds as
   stats.record_many rounds them (rint of the value, clipped to [0, highest]) */
static void record(Pump *self, int h, double seconds) {
    Hist *hs = &self->hist[h];
    long long v = seconds > 0 ? llrint(seconds * 1e6) : 0;
    if (v > self->highest) v = self->highest;
    /* _counts_index_for: the bucket from the bit length of (v | sub_bucket_mask) */
    int pow2ceiling = 64 - __builtin_clzll((unsigned long long)(v | self->sub_mask));
    int bucket = pow2ceiling - self->unit_mag - (self->half_mag + 1);
    long long sub = v >> (bucket + self->unit_mag);
    long long index = (((long long)bucket + 1) << self->half_mag) + sub - self->half_count;
    if (index < 0 || index >= hs->len) return;
    hs->counts[index]++;
    if (!hs->total || v < hs->min) hs->min = v;
    if (!hs->total || v > hs->max) hs->max = v;
    hs->total++;
}

/* the seven latencies of a connection that finished well (stats.fill's arithmetic) */
static void record_ok(Pump *self, Conn *c, double end) {
    record(self, H_LAG, c->start - c->sched);
    double at[3] = {c->conn_t, c->ttfb, end};
    for (int k = 0; k < 3; k++) {
        if (at[k] < 0) continue; /* MISSING: that step never happened */
        record(self, k, at[k] - c->sched);
        record(self, H_ACTUAL + k, at[k] - c->start);
    }
}

static int finish_ok(Pump *self, int fd, double now, int reset) {
    Conn *c = &self->conns[fd];
    if (reset) {
        /* SO_LINGER {1, 0}: close() sends RST, no TIME_WAIT (tcp_close -> tcp_disconnect) */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd); /* also removes it from the epoll set */
    self->ok_count++;
    int rc = 0;
    if (self->bound) record_ok(self, c, now);
    else rc = add_row(self, c->sched, c->start, c->conn_t, c->ttfb, now);
    release(self, fd);
    return rc;
}

/* append to the slot's buffer, or -1 with MemoryError set */
static int keep(Pump *self, Conn *c, const char *data, Py_ssize_t n) {
    if (c->len + n > c->cap) {
        Py_ssize_t cap = c->cap ? c->cap : 1024;
        while (cap < c->len + n) cap *= 2;
        char *b = realloc(c->buf, (size_t)cap);
        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        self->buffered += cap - c->cap;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, (size_t)n);
    c->len += n;
    return 0;
}

/* are data[0..len) the bytes `ok` (a response judged complete)? */
static int same(PyObject *ok, const char *data, Py_ssize_t len) {
    return PyBytes_GET_SIZE(ok) == len && len &&
           memcmp(PyBytes_AS_STRING(ok), data, (size_t)len) == 0;
}

static int matches(PyObject *ok, Conn *c) { return same(ok, c->buf, c->len); }

/* serve one event of a connection of ours; -1 on a Python error */
static int serve(Pump *self, int fd, uint32_t ev, double now, PyObject *exports) {
    Conn *c = &self->conns[fd];
    if (c->state == CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) return export(self, exports, fd, ev, ACT_EVENT, 0);
        c->conn_t = now;
        if (!self->http) {
            if (self->close_mode != CLOSE_SERVER)
                return finish_ok(self, fd, now, self->close_mode == CLOSE_RESET);
            c->state = READING; /* bare tcp, --close server: wait for its FIN */
            self->connecting--;
            if (!(ev & (EPOLLIN | EPOLLRDHUP))) return 0;
        } else {
            if (send(fd, self->req, (size_t)self->reqlen, MSG_NOSIGNAL) < 0)
                return export(self, exports, fd, ev, ACT_FAIL, errno);
            c->state = READING;
            self->connecting--;
            if (!(ev & (EPOLLIN | EPOLLRDHUP))) return 0; /* the response: a new edge */
        }
    }
    /* read what is queued: a short recv() took all of it, and EPOLLRDHUP in the same
       event says the FIN is behind it (conn.py, _event) */
    int failed = 0, got = 0;
    /* the last read's bytes, still only in rbuf: a response that comes in one read (on
       loopback, nearly all) is judged where it lies and never copied (below) */
    Py_ssize_t held = 0;
    for (;;) {
        if (held && keep(self, c, self->rbuf, held) < 0) return -1;
        held = 0;
        char cbuf[CMSG_SPACE(sizeof(struct timespec))];
        struct iovec iov = {self->rbuf, RECV_SIZE};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                           .msg_controllen = sizeof cbuf};
        ssize_t n = recvmsg(fd, &m, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            failed = errno;
            c->eof = 1;
            got = 1;
            break;
        }
        got = 1;
        if (n == 0) {
            c->eof = 1;
            break;
        }
        /* when these bytes arrived (tcp_recv_timestamp: the last segment read), on our
           clock; a stamp outside [start, now] (the wall clock stepped) is not used */
        double at = now;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - self->rt_off -
                       self->start_at;
            if (t >= c->start && t <= now) at = t;
        }
        c->rx = at;
        if (c->ttfb < 0) c->ttfb = at;
        /* bare tcp keeps no bytes: only the server's FIN ends it (conn.py, _judge) */
        if (self->http) held = n;
        if (n < RECV_SIZE) {
            if (ev & EPOLLRDHUP) c->eof = 1;
            break;
        }
    }
    if (!got) return 0;
    if (!self->http) {
        if (failed) return export(self, exports, fd, ev, ACT_JUDGE, failed);
        return c->eof ? finish_ok(self, fd, now, 0) : 0;
    }
    /* a later read joins what is kept; a first one is looked at where it lies */
    if (held && c->len) {
        if (keep(self, c, self->rbuf, held) < 0) return -1;
        held = 0;
    }
    const char *data = held ? self->rbuf : c->buf;
    Py_ssize_t len = held ? held : c->len;
    int complete = !failed && same(self->ok[c->eof], data, len);
    if (complete) {
        /* the client closes: the response ended when its last bytes arrived */
        if (self->close_mode != CLOSE_SERVER)
            return finish_ok(self, fd, c->rx, self->close_mode == CLOSE_RESET);
        /* --close server: a response that its length frames (complete without the FIN:
           conn.py sets ok[0] to it) ended with its last byte, as the client closing
           first would have it; the FIN only closes.  One that the FIN delimits ends
           with the FIN, seen now (a FIN has no receive stamp) */
        if (c->eof) return finish_ok(self, fd, same(self->ok[0], data, len) ? c->rx : now, 0);
    }
    /* kept: for more bytes, for the server's FIN, or for conn.py (export) */
    if (held && keep(self, c, self->rbuf, held) < 0) return -1;
    if (complete) return 0; /* the server's FIN will raise the next edge */
    return export(self, exports, fd, ev, ACT_JUDGE, failed);
}

/* serve events[0..n): ours here, the rest into `others`; -1 on a Python error */
static int serve_all(Pump *self, int n, double now, PyObject *others, PyObject *exports) {
    for (int i = 0; i < n; i++) {
        int fd = self->events[i].data.fd;
        uint32_t ev = self->events[i].events;
        if (fd < self->cap && self->conns[fd].state != FREE) {
            if (serve(self, fd, ev, now, exports) < 0) return -1;
        } else if (self->in_run && fd == self->timer_fd) {
            uint64_t expiries;
            if (read(fd, &expiries, sizeof expiries) < 0) { /* EAGAIN: re-armed already */ }
            self->armed_at = -1.0;
        } else {
            PyObject *t = Py_BuildValue("(iI)", fd, ev);
            if (!t || PyList_Append(others, t) < 0) {
                Py_XDECREF(t);
                return -1;
            }
            Py_DECREF(t);
        }
    }
    return 0;
}

/* Pump.poll(timeout, maxevents, until) -> (now, others, exports).  timeout < 0 blocks
   until something is ready, 0 does not.  others: (fd, events) that are not ours (the
   timer, the control pipe, connections the Python engine owns); exports: see export().

   `until` (seconds from the run's start; inf: none) is when the next connection is
   due: events are served in slices sized by their measured cost so that serving stops
   about then, and the rest stay on the kernel's ready list (edge-triggered: an edge
   that was not returned is returned by the next epoll_wait).  One slice of up to
   `maxevents` takes ~1 ms (close() and recv() run the peer's side in softirq on
   loopback: ~8 us an event), which would make every connection due meanwhile late.
   When `until` has passed already (the engine is behind and has just started a batch),
   at least half of `maxevents` are served: completions must keep pace with starts, or
   in-flight runs away (engine.py, MAX_EVENTS). */
/* the body of Pump.poll (above); 0, 1 when a signal interrupted the wait (its handler
   has run: the engine must look at its state), or -1 with a Python error.  *nowp: the
   time after serving (seconds from the start). */
static int poll_core(Pump *self, double timeout, int maxevents, double until,
                     PyObject *others, PyObject *exports, double *nowp) {
    if (maxevents > self->maxevents) maxevents = self->maxevents;
    double now;
    int n;
    if (timeout != 0) {
        /* sleep until the first event; what else is ready is served below, by time */
        int ms = timeout < 0 ? -1 : (int)ceil(timeout * 1000.0);
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(self->epfd, self->events, 1, ms);
        Py_END_ALLOW_THREADS
        if (n < 0) goto failed;
        now = mono() - self->start_at;
        if (serve_all(self, n, now, others, exports) < 0) return -1;
        if (n == 0 || PyList_GET_SIZE(others)) goto done; /* the timer: look now */
        maxevents -= n;
    }
    int floor_ = 0;
    now = mono() - self->start_at;
    if (timeout == 0 && until <= now) floor_ = maxevents / 2; /* behind: see above */
    while (maxevents > 0) {
        double left = until - now;
        int k = maxevents;
        if (left < self->ev_cost * k) k = (int)(left / self->ev_cost);
        if (k < floor_) k = floor_;
        if (k < 1) break; /* the next connection is due: back to the engine */
        n = epoll_wait(self->epfd, self->events, k, 0);
        if (n < 0) goto failed;
        if (n == 0) break;
        if (serve_all(self, n, now, others, exports) < 0) return -1;
        double after = mono() - self->start_at;
        /* the cost of an event, smoothed: what sizes the next slice */
        self->ev_cost = 0.8 * self->ev_cost + 0.2 * ((after - now) / n);
        now = after;
        maxevents -= n;
        floor_ -= n;
        if (floor_ < 0) floor_ = 0;
        if (n < k) break; /* nothing more is ready */
        if (PyList_GET_SIZE(others)) break; /* the timer or the control pipe: look now */
    }
done:
    *nowp = now;
    return 0;
failed:
    if (errno != EINTR) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (PyErr_CheckSignals() < 0) return -1; /* a handler raised */
    *nowp = mono() - self->start_at;         /* a handler ran (stop()?): let the loop look */
    return 1;
}

static PyObject *Pump_poll(Pump *self, PyObject *args) {
    double timeout, until, now;
    int maxevents;
    if (!PyArg_ParseTuple(args, "did", &timeout, &maxevents, &until)) return NULL;
    self->rt_off = rt_offset();
    PyObject *others = PyList_New(0), *exports = PyList_New(0);
    if (!others || !exports ||
        poll_core(self, timeout, maxevents, until, others, exports, &now) < 0) {
        Py_XDECREF(others);
        Py_XDECREF(exports);
        return NULL;
    }
    return Py_BuildValue("(dNN)", now, others, exports);
}

/* Pump.pace(timeout, skip_lag, max_inflight, batch, grid, spin, timer_fd, steal_lag,
   coalesce): the engine's pacing constants, for run() (engine.py explains each) */
static PyObject *Pump_pace(Pump *self, PyObject *args) {
    if (!PyArg_ParseTuple(args, "ddiiddidp", &self->timeout, &self->skip_lag,
                          &self->max_inflight, &self->batch, &self->grid, &self->spin,
                          &self->timer_fd, &self->steal_lag, &self->coalesce))
        return NULL;
    Py_RETURN_NONE;
}

/* Pump.share(board, lane, lanes): the lanes of the run's workers (a writable buffer of
   lanes * LANE_BYTES, 64-byte aligned: an mmap), and which one is ours */
static PyObject *Pump_share(Pump *self, PyObject *args) {
    Py_buffer b;
    int lane, nlanes;
    if (!PyArg_ParseTuple(args, "w*ii", &b, &lane, &nlanes)) return NULL;
    if (nlanes < 1 || lane < 0 || lane >= nlanes ||
        b.len < (Py_ssize_t)sizeof(Lane) * nlanes || ((uintptr_t)b.buf & 63)) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "share: need %d lanes of %zu bytes, 64-byte aligned, "
                     "and 0 <= lane < lanes (got %zd bytes, lane %d)", nlanes, sizeof(Lane),
                     b.len, lane);
        return NULL;
    }
    if (self->shared) PyBuffer_Release(&self->board);
    self->board = b;
    self->lanes = (Lane *)b.buf;
    self->lane = lane;
    self->nlanes = nlanes;
    self->shared = 1;
    Py_RETURN_NONE;
}

static int need_lanes(Pump *self) {
    if (self->shared) return 0;
    PyErr_SetString(PyExc_RuntimeError, "no lanes: call share() first");
    return -1;
}

/* the due time of lane ln's next slot not yet taken, or INFINITY */
static double peek(Lane *ln) {
    uint64_t c = __atomic_load_n(&ln->taken, __ATOMIC_ACQUIRE);
    if (c >= __atomic_load_n(&ln->filled, __ATOMIC_ACQUIRE)) return INFINITY;
    double t;
    __atomic_load(&ln->ring[c % LANE_RING], &t, __ATOMIC_RELAXED);
    return t;
}

/* take lane ln's next slot if it is due by `by`: 1 with its index and due time, else 0 */
static int take_slot(Lane *ln, double by, uint64_t *j, double *t) {
    for (;;) {
        uint64_t c = __atomic_load_n(&ln->taken, __ATOMIC_ACQUIRE);
        if (c >= __atomic_load_n(&ln->filled, __ATOMIC_ACQUIRE)) return 0;
        double v;
        __atomic_load(&ln->ring[c % LANE_RING], &v, __ATOMIC_RELAXED);
        if (v > by) return 0;
        /* fails if anyone took slot c meanwhile (then v may be a reused cell's): again */
        if (__atomic_compare_exchange_n(&ln->taken, &c, c + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            *j = c;
            *t = v;
            return 1;
        }
    }
}

/* Pump.push(times) -> how many were written: the next due times of our lane, in order
   (as many as the ring has room for) */
static PyObject *Pump_push(Pump *self, PyObject *args) {
    Py_buffer tb;
    if (need_lanes(self) < 0 || !PyArg_ParseTuple(args, "y*", &tb)) return NULL;
    const double *times = (const double *)tb.buf;
    Py_ssize_t n = tb.len / (Py_ssize_t)sizeof(double), k = 0;
    Lane *ln = &self->lanes[self->lane];
    uint64_t f = ln->filled; /* only we write it */
    uint64_t room = LANE_RING - (f - __atomic_load_n(&ln->taken, __ATOMIC_ACQUIRE));
    for (; k < n && (uint64_t)k < room; k++)
        __atomic_store(&ln->ring[(f + (uint64_t)k) % LANE_RING], (double *)&times[k],
                       __ATOMIC_RELAXED);
    __atomic_store_n(&ln->filled, f + (uint64_t)k, __ATOMIC_RELEASE); /* publish */
    PyBuffer_Release(&tb);
    return PyLong_FromSsize_t(k);
}

/* Pump.drop() -> how many of our lane's slots it took without starting them (the end of
   the run, or a stop) */
static PyObject *Pump_drop(Pump *self, PyObject *Py_UNUSED(ignored)) {
    if (need_lanes(self) < 0) return NULL;
    Lane *ln = &self->lanes[self->lane];
    uint64_t f = ln->filled;
    uint64_t c = __atomic_load_n(&ln->taken, __ATOMIC_ACQUIRE);
    while (c < f && !__atomic_compare_exchange_n(&ln->taken, &c, f, 0, __ATOMIC_ACQ_REL,
                                                 __ATOMIC_ACQUIRE))
        ; /* c reloaded: someone took one */
    return PyLong_FromUnsignedLongLong(c < f ? f - c : 0);
}

static uint64_t backlog(Pump *self) {
    Lane *ln = &self->lanes[self->lane];
    uint64_t c = __atomic_load_n(&ln->taken, __ATOMIC_ACQUIRE);
    return ln->filled > c ? ln->filled - c : 0;
}

/* arm the timer for `wake` (seconds from the start) unless it is armed for it already */
static int arm(Pump *self, double wake) {
    if (wake == self->armed_at) return 0;
    double when = self->start_at + wake;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)when;
    its.it_value.tv_nsec = (long)((when - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec <= 0 && its.it_value.tv_nsec <= 0) its.it_value.tv_nsec = 1;
    if (timerfd_settime(self->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->armed_at = wake;
    return 0;
}

/* the next slot for us to take, due by `now`: our lane's first, else another lane's that
   is more than steal_lag overdue (round-robin from ours).  1 with it (*ln its lane), 0 if
   none, or none may start: *full at --max-inflight (what is due waits for a connection to
   end; one so late that it is skipped is still taken) */
static int next_slot(Pump *self, double now, int others_live, int *full, int *ln, uint64_t *j,
                     double *t) {
    int at_cap = self->live + others_live >= self->max_inflight;
    for (int k = 0; k < self->nlanes; k++) {
        int w = (self->lane + k) % self->nlanes;
        double by = k ? now - self->steal_lag : now;
        double head = peek(&self->lanes[w]);
        if (head > by) continue;
        if (at_cap && now - head <= self->skip_lag) {
            *full = 1;
            return 0;
        }
        if (take_slot(&self->lanes[w], at_cap ? now - self->skip_lag : by, j, t)) {
            *ln = w;
            return 1;
        }
    }
    return 0;
}

/* sleep until the armed timer fires, and consume its expiry: run()'s coalesced wake-up.
   0; 1 when a signal interrupted it (its handler has run: the engine must look at its
   state); -1 with a Python error (a handler raised) */
static int sleep_on_timer(Pump *self) {
    struct pollfd p = {.fd = self->timer_fd, .events = POLLIN};
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = poll(&p, 1, -1);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        return PyErr_CheckSignals() < 0 ? -1 : 1;
    }
    uint64_t expiries;
    if (read(self->timer_fd, &expiries, sizeof expiries) < 0) { /* EAGAIN: raced */ }
    self->armed_at = -1.0;
    return 0;
}

/* Pump.run(next_after, deadline, others_live) -> (skipped, now, others, exports, failed)

   engine.py's loop for as long as nothing needs Python: starts the connections due in
   our lane (and overdue ones of other lanes: next_slot), serves their events, times them
   out, and sleeps on the timer in between, on the same grid and with the same rules as
   engine.py's loop (pace()).  Per loop turn that loop costs ~25 us of Python, ~5 us per
   connection at 20k/s a worker, CPU that the server on the same cores lacks (docs/run.md
   "The C hot path").  Other lanes add no wake-ups: they are looked at when we are awake.

   It returns when:
   * `deadline` (seconds from the start: the interval's end) has come;
   * our lane is below half full and the schedule has more (`next_after`, the due time
     of the first slot not pushed yet; inf: none): push, so that a stall of ours leaves
     others enough to take;
   * our lane is empty and next_after is due;
   * a connection must be handed over (exports: errors, a new response, a timeout);
   * an event is not ours (others: the control pipe, connections conn.py owns);
   * a start failed before any event: failed = (errno, sched, now), else None;
   * nothing is left: our lane is empty, next_after is inf and none is in flight;
   * a signal's handler ran.
   others_live: connections conn.py owns, for --max-inflight. */
static PyObject *Pump_run(Pump *self, PyObject *args) {
    double next_after, deadline;
    int others_live;
    if (need_lanes(self) < 0 || !PyArg_ParseTuple(args, "ddi", &next_after, &deadline,
                                                  &others_live))
        return NULL;
    Lane *own = &self->lanes[self->lane];
    long long skipped = 0;
    PyObject *others = PyList_New(0), *exports = PyList_New(0), *failed = NULL;
    if (!others || !exports) goto error;
    self->in_run = 1;
    self->rt_off = rt_offset();
    double now = mono() - self->start_at;
    for (;;) {
        if (now >= deadline) break;
        int started = 0, full = 0, w;
        uint64_t j;
        double t;
        while (started < self->batch && next_slot(self, now, others_live, &full, &w, &j, &t)) {
            started++;
            /* a due connection this late is skipped: starting it would measure our
               backlog (engine.py) */
            if (now - t > self->skip_lag) {
                skipped++;
                continue;
            }
            if (w != self->lane) self->taken_over++;
            int err = start_one(self, (long long)w + (long long)j * self->nlanes, t, now);
            if (err < 0) goto error;
            if (err) {
                failed = Py_BuildValue("(idd)", err, t, now);
                if (!failed) goto error;
                goto out;
            }
        }
        uint64_t left = backlog(self);
        if (next_after != INFINITY && left < LANE_RING / 2) break;
        double nxt = left ? peek(own) : next_after;
        if (!left && (next_after <= now ||
                      (next_after == INFINITY && !self->live && !others_live)))
            break;
        while (self->head >= 0 && now - self->conns[self->head].start >= self->timeout)
            if (export(self, exports, self->head, 0, ACT_EXPIRE, 0) < 0) goto error;
        if (PyList_GET_SIZE(exports)) break;
        double wait = 0.0;
        int timer_only = 0;
        double wake = INFINITY;
        if (full || (started < self->batch && nxt > now)) {
            /* full: nothing starts before a connection ends (an event) or times out */
            wake = !full && nxt < deadline ? nxt : deadline;
            if (self->head >= 0 && self->conns[self->head].start + self->timeout < wake)
                wake = self->conns[self->head].start + self->timeout;
            /* on the grid (engine.on_grid), the tolerance keeps a time on it there */
            wake = ceil(wake / self->grid - 1e-6) * self->grid;
            wait = wake - now;
            if (wait <= self->spin) wait = 0.0;
            else if (arm(self, wake) < 0) goto error;
            /* Coalesce: the next start is at most a grid step away, so sleep on the timer
               alone and serve what completed meanwhile in one batch when it fires, not a
               wake-up each.  Below saturation a wake-up per completion costs both sides
               CPU: ~0.8 context switches a connection at 80% of the ceiling against 0.15
               at it, and the server on the same cores is preempted for each.  In
               alternation against nginx: at 62,000/s (80% of the ceiling) the vCPUs were
               92-94% busy instead of 97-98%, at 39,000/s 68% instead of 86% (nginx
               11.4-11.7 against 14.4-14.8 us a connection); docs/run.md "Keeping the
               schedule".  The response's times do not move: they are the kernel's
               receive stamps (serve()).  Not while a handshake of ours is pending: a
               connect's end has no stamp (a remote target; on loopback connect()
               returns done). */
            timer_only = wait > 0 && !full && self->coalesce && !self->connecting &&
                         wake - now <= self->grid + 1e-9;
        }
        if (timer_only) {
            /* what is ready now first, then the timer alone.  Sliced by `wake`, not by
               `nxt`: nothing starts before the timer fires, and the few microseconds left
               to `nxt` would leave most completions waiting another step (before this,
               total's median at 62,000/s was 0.52 ms against 0.34 since) */
            int rc = poll_core(self, 0.0, self->maxevents, wake, others, exports, &now);
            if (rc < 0) goto error;
            if (rc > 0 || PyList_GET_SIZE(others) || PyList_GET_SIZE(exports)) break;
            /* not armed any more: it fired while those were served, and they consumed it */
            rc = 0;
            if (self->armed_at >= 0) {
                self->naps++;
                rc = sleep_on_timer(self);
            }
            if (rc < 0) goto error;
            now = mono() - self->start_at;
            if (rc > 0) break;
            continue;
        }
        /* full: nothing is due before a slot frees, so serve all that is ready (by
           `nxt`, long past, poll_core would stop after the first event: one wake-up per
           connection, measured as 20% more system time at a cap of 64) */
        int rc = poll_core(self, wait > 0 ? -1.0 : 0.0, self->maxevents,
                           full ? INFINITY : nxt, others, exports, &now);
        if (rc < 0) goto error;
        if (rc > 0 || PyList_GET_SIZE(others) || PyList_GET_SIZE(exports)) break;
    }
out:
    self->in_run = 0;
    if (!failed) failed = Py_NewRef(Py_None);
    return Py_BuildValue("(LdNNN)", skipped, now, others, exports, failed);
error:
    self->in_run = 0;
    Py_XDECREF(others);
    Py_XDECREF(exports);
    Py_XDECREF(failed);
    return NULL;
}

/* Pump.expire(now, limit) -> exports (ACT_EXPIRE) of connections started limit ago */
static PyObject *Pump_expire(Pump *self, PyObject *args) {
    double now, limit;
    if (!PyArg_ParseTuple(args, "dd", &now, &limit)) return NULL;
    PyObject *exports = PyList_New(0);
    if (!exports) return NULL;
    while (self->head >= 0 && now - self->conns[self->head].start >= limit) {
        if (export(self, exports, self->head, 0, ACT_EXPIRE, 0) < 0) {
            Py_DECREF(exports);
            return NULL;
        }
    }
    return exports;
}

/* Pump.set_ok(eof, data): the response the Python engine just judged complete */
static PyObject *Pump_set_ok(Pump *self, PyObject *args) {
    int eof;
    PyObject *data;
    if (!PyArg_ParseTuple(args, "pS", &eof, &data)) return NULL;
    Py_INCREF(data);
    Py_SETREF(self->ok[eof], data);
    Py_RETURN_NONE;
}

/* Pump.take() -> (rows, ok, attempted, late, hists): what was recorded since the last
   take; rows: native doubles, five per finished connection (stats.Recorder.done's
   layout), unless histograms are bound (Pump.bind): then hists has each one's
   (count, min, max) of what was added, and rows is empty */
static PyObject *Pump_take(Pump *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *rows = PyBytes_FromStringAndSize((const char *)self->rows,
                                               self->nrows * 5 * (Py_ssize_t)sizeof(double));
    PyObject *hists = PyList_New(0);
    if (!rows || !hists) goto error;
    for (int h = 0; self->bound && h < NHIST; h++) {
        Hist *hs = &self->hist[h];
        PyObject *t = Py_BuildValue("(LLL)", hs->total, hs->min, hs->max);
        if (!t || PyList_Append(hists, t) < 0) {
            Py_XDECREF(t);
            goto error;
        }
        Py_DECREF(t);
        hs->total = hs->min = hs->max = 0;
    }
    PyObject *out = Py_BuildValue("(NLLLLN)", rows, self->ok_count, self->attempted, self->late,
                                  self->taken_over, hists);
    self->nrows = 0;
    self->ok_count = self->attempted = self->late = self->taken_over = 0;
    return out;
error:
    Py_XDECREF(rows);
    Py_XDECREF(hists);
    return NULL;
}

/* Pump._record(h, seconds): record one value into bound histogram h, as a finished
   connection would (for the tests, which hold it against hdrh's record_value) */
static PyObject *Pump__record(Pump *self, PyObject *args) {
    int h;
    double seconds;
    if (!PyArg_ParseTuple(args, "id", &h, &seconds)) return NULL;
    if (!self->bound || h < 0 || h >= NHIST)
        return PyErr_Format(PyExc_ValueError, "no bound histogram %d", h);
    record(self, h, seconds);
    Py_RETURN_NONE;
}

/* Pump.bind(counts, unit_magnitude, sub_bucket_half_count_magnitude,
   sub_bucket_half_count, sub_bucket_mask, highest): from now on, record the latencies
   of connections that finish well straight into these seven histograms' counts (hdrh's
   ctypes arrays, stats.HISTOGRAMS' order), the count, min and max of what was added
   returned by take() for their Python objects.  Why: stats.fill's numpy pass, in the
   worker between two connections, costs ~1 us per connection and stalls the schedule
   for 1-2.5 ms every 1,024 connections (measured at 20k/s; numpy's pages go cold on
   this VM within ~10 ms, docs/run.md); here it is ~50 ns, inline. */
static PyObject *Pump_bind(Pump *self, PyObject *args) {
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "OiiLLL", &seq, &self->unit_mag, &self->half_mag,
                          &self->half_count, &self->sub_mask, &self->highest))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "bind: counts must be a sequence");
    if (!fast) return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != NHIST) {
        Py_DECREF(fast);
        return PyErr_Format(PyExc_ValueError, "bind: %d histograms expected", NHIST);
    }
    unbind(self);
    for (int h = 0; h < NHIST; h++) {
        Hist *hs = &self->hist[h];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, h), &hs->view,
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
            for (int k = 0; k < h; k++) PyBuffer_Release(&self->hist[k].view);
            Py_DECREF(fast);
            return NULL;
        }
        hs->counts = (uint64_t *)hs->view.buf;
        hs->len = hs->view.len / (Py_ssize_t)sizeof(uint64_t);
        hs->total = hs->min = hs->max = 0;
    }
    Py_DECREF(fast);
    self->bound = 1;
    Py_RETURN_NONE;
}

/* Pump.abandon(): close every connection of ours (stop, exit), counting nothing */
static PyObject *Pump_abandon(Pump *self, PyObject *Py_UNUSED(ignored)) {
    while (self->head >= 0) {
        int fd = self->head;
        close(fd);
        release(self, fd);
    }
    Py_RETURN_NONE;
}

static PyObject *Pump_get_live(Pump *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->live);
}

static PyObject *Pump_get_connecting(Pump *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->connecting);
}

static PyObject *Pump_get_naps(Pump *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(self->naps);
}

static PyObject *Pump_get_buffered(Pump *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->buffered);
}

static PyObject *Pump_get_event_cost(Pump *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->ev_cost);
}

static int Pump_set_event_cost(Pump *self, PyObject *value, void *Py_UNUSED(closure)) {
    double v = value ? PyFloat_AsDouble(value) : -1.0;
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (!(v > 0)) {
        PyErr_SetString(PyExc_ValueError, "event_cost must be a positive number of seconds");
        return -1;
    }
    self->ev_cost = v;
    return 0;
}

static PyMethodDef Pump_methods[] = {
    {"start", (PyCFunction)(void (*)(void))Pump_start, METH_FASTCALL,
     "start(seq, sched, now) -> 0 or the errno that failed the connection"},
    {"poll", (PyCFunction)Pump_poll, METH_VARARGS,
     "poll(timeout, maxevents, until) -> (now, others, exports)"},
    {"pace", (PyCFunction)Pump_pace, METH_VARARGS,
     "pace(timeout, skip_lag, max_inflight, batch, grid, spin, timer_fd, steal_lag, "
     "coalesce)"},
    {"share", (PyCFunction)Pump_share, METH_VARARGS, "share(board, lane, lanes)"},
    {"push", (PyCFunction)Pump_push, METH_VARARGS, "push(times) -> how many were written"},
    {"drop", (PyCFunction)Pump_drop, METH_NOARGS, "drop() -> slots of our lane taken unstarted"},
    {"run", (PyCFunction)Pump_run, METH_VARARGS,
     "run(next_after, deadline, others_live) -> (skipped, now, others, exports, failed)"},
    {"expire", (PyCFunction)Pump_expire, METH_VARARGS, "expire(now, limit) -> exports"},
    {"set_ok", (PyCFunction)Pump_set_ok, METH_VARARGS, "set_ok(eof, data)"},
    {"take", (PyCFunction)Pump_take, METH_NOARGS,
     "take() -> (rows, ok, attempted, late, taken_over, [(count, min, max)] of the bound "
     "histograms)"},
    {"_record", (PyCFunction)Pump__record, METH_VARARGS, "_record(h, seconds): tests only"},
    {"bind", (PyCFunction)Pump_bind, METH_VARARGS,
     "bind(counts, unit_magnitude, sub_bucket_half_count_magnitude, sub_bucket_half_count, "
     "sub_bucket_mask, highest)"},
    {"abandon", (PyCFunction)Pump_abandon, METH_NOARGS, "close every connection of ours"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Pump_get_backlog(Pump *self, void *Py_UNUSED(closure)) {
    if (need_lanes(self) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(backlog(self));
}

static PyObject *Pump_get_next_due(Pump *self, void *Py_UNUSED(closure)) {
    if (need_lanes(self) < 0) return NULL;
    return PyFloat_FromDouble(peek(&self->lanes[self->lane]));
}

static PyGetSetDef Pump_getset[] = {
    {"live", (getter)Pump_get_live, NULL, "connections in flight here", NULL},
    {"backlog", (getter)Pump_get_backlog, NULL, "slots of our lane pushed, not yet taken",
     NULL},
    {"next_due", (getter)Pump_get_next_due, NULL,
     "the due time of our lane's next slot (seconds from the start; inf: none)", NULL},
    {"connecting", (getter)Pump_get_connecting, NULL,
     "connections in flight here whose handshake is not done", NULL},
    {"naps", (getter)Pump_get_naps, NULL,
     "run()'s sleeps on the timer alone (coalesced wake-ups), since the pump was made", NULL},
    {"buffered", (getter)Pump_get_buffered, NULL,
     "bytes held in the slots' buffers now: responses not complete yet, or complete and "
     "waiting for the server's FIN (one that came in one read is never copied)", NULL},
    {"event_cost", (getter)Pump_get_event_cost, (setter)Pump_set_event_cost,
     "seconds one event takes to serve, measured and smoothed: sizes poll's slices", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tcpchurn.load._pump.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The per-connection hot path of one engine (see the module's source).",
    .tp_methods = Pump_methods,
    .tp_getset = Pump_getset,
    .tp_init = (initproc)Pump_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef pumpmodule = {
    PyModuleDef_HEAD_INIT, "_pump", "The engine's per-connection hot path in C.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pump(void) {
    if (PyType_Ready(&PumpType) < 0) return NULL;
    PyObject *m = PyModule_Create(&pumpmodule);
    if (!m) return NULL;
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(m, "Pump", (PyObject *)&PumpType) < 0 ||
        PyModule_AddIntConstant(m, "ACT_EVENT", ACT_EVENT) < 0 ||
        PyModule_AddIntConstant(m, "ACT_FAIL", ACT_FAIL) < 0 ||
        PyModule_AddIntConstant(m, "ACT_JUDGE", ACT_JUDGE) < 0 ||
        PyModule_AddIntConstant(m, "ACT_EXPIRE", ACT_EXPIRE) < 0 ||
        PyModule_AddIntConstant(m, "CLOSE_SERVER", CLOSE_SERVER) < 0 ||
        PyModule_AddIntConstant(m, "CLOSE_CLIENT", CLOSE_CLIENT) < 0 ||
        PyModule_AddIntConstant(m, "CLOSE_RESET", CLOSE_RESET) < 0 ||
        PyModule_AddIntConstant(m, "LANE_BYTES", (long)sizeof(Lane)) < 0 ||
        PyModule_AddIntConstant(m, "LANE_RING", LANE_RING) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
