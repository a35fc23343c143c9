/* fairload: a keep-alive HTTP/1.1 GET load generator that tells connections apart.

   wrk reports latency percentiles but not how the requests were shared among
   its connections, so a server that serves a few connections and starves the
   rest looks as good as a fair one.  fairload keeps N connections, each
   sending the next GET as soon as the previous answer's last byte arrived,
   for D seconds, and records every request's latency (first byte sent to
   last byte received) and how many requests each connection completed.

       fairload HOST PORT PATH CONNECTIONS SECONDS [THREADS]

   Prints one line, latencies in microseconds:

       FAIRJSON {"requests": .., "duration_us": .., "bytes": .., "connect": ..,
                 "read": .., "write": .., "status": .., "timeout": .., "p50": ..,
                 "p90": .., "p99": .., "max": .., "mean": .., "conn_min": ..,
                 "conn_median": .., "conn_max": .., "zero_conns": ..}

   Responses are framed by Content-Length or chunked transfer coding; an
   answer with neither, or with "Connection: close", ends its connection,
   which is reopened (the slot keeps its count).  A request still unanswered
   when the time is up is not counted; one that took longer than 2 s counts
   as a timeout (as wrk's --timeout 2s) and still counts as completed.
   Only numeric IPv4 addresses: the benchmark talks to 127.0.0.1 only.
   Build: cc -O2 -o fairload fairload.c -lpthread */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_CONNS 20000
#define MAX_THREADS 16
#define TIMEOUT_US 2000000ULL

enum phase { HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER };

struct conn {
    int fd;
    int connecting;
    enum phase phase;
    char *buf;             /* response bytes not yet consumed (head, chunk-size lines) */
    size_t len;
    uint64_t remaining;    /* body or chunk bytes still to come */
    int close_after;       /* "Connection: close" or no framing */
    int status;
    uint64_t sent_at;      /* us; 0 when no request is in flight */
    uint64_t done;         /* requests completed by this slot */
};

struct worker {
    struct conn *conns;
    int nconns;
    int epfd;
    uint64_t *lat;         /* one latency per completed request, us */
    size_t nlat, caplat;
    uint64_t bytes, e_connect, e_read, e_write, e_status, e_timeout;
};

static struct sockaddr_in target;
static char request[1024];
static size_t request_len;
static uint64_t started_us, ends_us;

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void record(struct worker *w, uint64_t us) {
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 65536;
        w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
        if (!w->lat) die("realloc");
    }
    w->lat[w->nlat++] = us;
}

static int send_request(struct worker *w, struct conn *c) {
    /* A GET of a few dozen bytes fits any socket buffer of an idle keep-alive
       connection: a short write is reported as a write error. */
    c->sent_at = now_us();
    c->phase = HEAD;
    c->len = 0;
    c->close_after = 0;
    c->status = 0;
    ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
    if (n != (ssize_t)request_len) {
        w->e_write++;
        return -1;
    }
    return 0;
}

static void open_conn(struct worker *w, struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = 1;
    c->sent_at = 0;
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        w->e_connect++;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void reopen(struct worker *w, struct conn *c) {
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (now_us() < ends_us) open_conn(w, c);
    else c->fd = -1;
}

static void complete(struct worker *w, struct conn *c) {
    uint64_t took = now_us() - c->sent_at;
    c->sent_at = 0;
    if (c->status < 200 || c->status > 399) w->e_status++;
    if (took > TIMEOUT_US) w->e_timeout++;
    record(w, took);
    c->done++;
}

/* The header block is complete in c->buf[0..end): status code and framing. */
static void parse_head(struct conn *c, size_t end) {
    c->buf[end - 1] = '\0';
    char *line = c->buf;
    c->status = (end > 12 && strncmp(line, "HTTP/1.", 7) == 0) ? atoi(line + 9) : 0;
    int framed = 0, chunked = 0;
    uint64_t length = 0;
    for (char *p = strstr(line, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        char *h = p + 2;
        if (strncasecmp(h, "content-length:", 15) == 0) {
            length = strtoull(h + 15, NULL, 10);
            framed = 1;
        } else if (strncasecmp(h, "transfer-encoding:", 18) == 0) {
            char *eol = strstr(h, "\r\n");
            size_t n = eol ? (size_t)(eol - h) : strlen(h);
            if (memmem(h, n, "chunked", 7)) chunked = 1;
        } else if (strncasecmp(h, "connection:", 11) == 0) {
            char *eol = strstr(h, "\r\n");
            size_t n = eol ? (size_t)(eol - h) : strlen(h);
            if (memmem(h, n, "close", 5)) c->close_after = 1;
        }
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        framed = 1;
        length = 0;
    }
    if (chunked) {
        c->phase = CHUNK_SIZE;
    } else {
        c->phase = BODY;
        c->remaining = framed ? length : UINT64_MAX; /* unframed: to the close */
        if (!framed) c->close_after = 1;
    }
}

/* Consumes received bytes; returns 1 when a response ended, -1 on a framing error. */
static int consume(struct conn *c, const char *data, size_t n, size_t *used) {
    size_t i = 0;
    while (i < n) {
        if (c->phase == BODY || c->phase == CHUNK_DATA) {
            size_t take = n - i;
            if (take > c->remaining) take = (size_t)c->remaining;
            c->remaining -= take;
            i += take;
            if (c->remaining == 0) {
                if (c->phase == BODY) { *used = i; return 1; }
                c->phase = CHUNK_CRLF;
                c->len = 0;
            }
            continue;
        }
        /* HEAD, CHUNK_SIZE, CHUNK_CRLF, TRAILER: line-oriented, buffered. */
        if (c->len >= BUF_SIZE - 1) return -1;
        c->buf[c->len++] = data[i++];
        if (c->len < 2 || c->buf[c->len - 2] != '\r' || c->buf[c->len - 1] != '\n') continue;
        if (c->phase == HEAD) {
            if (c->len >= 4 && memcmp(c->buf + c->len - 4, "\r\n\r\n", 4) == 0) {
                parse_head(c, c->len);
                c->len = 0;
                if (c->phase == BODY && c->remaining == 0) { *used = i; return 1; }
            }
        } else if (c->phase == CHUNK_SIZE) {
            c->buf[c->len - 2] = '\0';
            char *endp;
            c->remaining = strtoull(c->buf, &endp, 16);
            if (endp == c->buf) return -1;
            c->len = 0;
            c->phase = c->remaining ? CHUNK_DATA : TRAILER;
        } else if (c->phase == CHUNK_CRLF) {
            if (c->len != 2) return -1;
            c->len = 0;
            c->phase = CHUNK_SIZE;
        } else { /* TRAILER: ends with an empty line */
            if (c->len == 2) { *used = i; return 1; }
            c->len = 0;
        }
    }
    *used = i;
    return 0;
}

/* One recv per readiness event: epoll is level-triggered, so bytes left over
   wake us again, and the client spends no second syscall per answer finding
   the socket empty (on 2 shared cores, client CPU is taken from the server). */
static void on_readable(struct worker *w, struct conn *c, char *scratch) {
    {
        ssize_t n = recv(c->fd, scratch, BUF_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            w->e_read++;
            reopen(w, c);
            return;
        }
        if (n == 0) {
            /* Closed by the server: the end of an unframed body, else an error
               when a request was in flight. */
            if (c->sent_at && c->phase == BODY && c->remaining == UINT64_MAX) complete(w, c);
            else if (c->sent_at) w->e_read++;
            reopen(w, c);
            return;
        }
        w->bytes += (uint64_t)n;
        if (!c->sent_at) return; /* nothing asked: ignore stray bytes */
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used = 0;
            int r = consume(c, scratch + off, (size_t)n - off, &used);
            off += used;
            if (r < 0) {
                w->e_read++;
                reopen(w, c);
                return;
            }
            if (r == 0) break;
            complete(w, c);
            if (c->close_after || now_us() >= ends_us) {
                if (c->close_after) reopen(w, c);
                return;
            }
            if (send_request(w, c) < 0) {
                reopen(w, c);
                return;
            }
        }
    }
}

static void *run_worker(void *arg) {
    struct worker *w = arg;
    char *scratch = malloc(BUF_SIZE);
    struct epoll_event events[256];
    if (!scratch) die("malloc");
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) die("epoll_create1");
    for (int i = 0; i < w->nconns; i++) {
        w->conns[i].buf = malloc(BUF_SIZE);
        if (!w->conns[i].buf) die("malloc");
        open_conn(w, &w->conns[i]);
    }
    for (;;) {
        uint64_t now = now_us();
        if (now >= ends_us) break;
        int timeout_ms = (int)((ends_us - now) / 1000) + 1;
        int n = epoll_wait(w->epfd, events, 256, timeout_ms > 100 ? 100 : timeout_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            if (c->connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (events[i].events & (EPOLLERR | EPOLLHUP))) {
                    w->e_connect++;
                    reopen(w, c);
                    continue;
                }
                if (!(events[i].events & EPOLLOUT)) continue;
                c->connecting = 0;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
                if (send_request(w, c) < 0) reopen(w, c);
                continue;
            }
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) on_readable(w, c, scratch);
        }
    }
    uint64_t end = now_us();
    for (int i = 0; i < w->nconns; i++) {
        /* Still unanswered after the timeout: wrk would have counted it too. */
        if (w->conns[i].sent_at && end - w->conns[i].sent_at > TIMEOUT_US) w->e_timeout++;
        if (w->conns[i].fd >= 0) close(w->conns[i].fd);
        free(w->conns[i].buf);
    }
    close(w->epfd);
    free(scratch);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    return v[i >= n ? n - 1 : i];
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH CONNECTIONS SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    int port = atoi(argv[2]);
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1 || port <= 0 || port > 65535) {
        fprintf(stderr, "fairload: HOST must be a numeric IPv4 address and PORT 1-65535\n");
        return 2;
    }
    target.sin_port = htons((uint16_t)port);
    const char *path = argv[3];
    int nconns = atoi(argv[4]);
    double seconds = atof(argv[5]);
    int nthreads = argc == 7 ? atoi(argv[6]) : (nconns < 2 ? 1 : 2);
    if (path[0] != '/' || strpbrk(path, " \r\n") || nconns < 1 || nconns > MAX_CONNS || seconds <= 0
        || seconds > 3600 || nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "fairload: PATH must start with / (no spaces), 1-%d connections, 0-3600 s, 1-%d threads\n",
                MAX_CONNS, MAX_THREADS);
        return 2;
    }
    if (nthreads > nconns) nthreads = nconns;
    int len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, argv[1], port);
    if (len < 0 || (size_t)len >= sizeof request) {
        fprintf(stderr, "fairload: PATH too long\n");
        return 2;
    }
    request_len = (size_t)len;

    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    struct worker workers[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    if (!conns) die("calloc");
    memset(workers, 0, sizeof workers);
    started_us = now_us();
    ends_us = started_us + (uint64_t)(seconds * 1e6);
    for (int t = 0, first = 0; t < nthreads; t++) {
        int count = nconns / nthreads + (t < nconns % nthreads);
        workers[t].conns = conns + first;
        workers[t].nconns = count;
        first += count;
        if (pthread_create(&threads[t], NULL, run_worker, &workers[t]) != 0) die("pthread_create");
    }
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    uint64_t elapsed = now_us() - started_us;

    struct worker all = {0};
    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &workers[t];
        for (size_t i = 0; i < w->nlat; i++) record(&all, w->lat[i]);
        free(w->lat);
        all.bytes += w->bytes;
        all.e_connect += w->e_connect;
        all.e_read += w->e_read;
        all.e_write += w->e_write;
        all.e_status += w->e_status;
        all.e_timeout += w->e_timeout;
    }
    qsort(all.lat, all.nlat, sizeof *all.lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < all.nlat; i++) sum += (double)all.lat[i];
    uint64_t *per = malloc((size_t)nconns * sizeof *per);
    if (!per) die("malloc");
    int zero = 0;
    for (int i = 0; i < nconns; i++) {
        per[i] = conns[i].done;
        zero += conns[i].done == 0;
    }
    qsort(per, (size_t)nconns, sizeof *per, cmp_u64);
    printf("FAIRJSON {\"requests\": %zu, \"duration_us\": %llu, \"bytes\": %llu, \"connect\": %llu, "
           "\"read\": %llu, \"write\": %llu, \"status\": %llu, \"timeout\": %llu, \"p50\": %llu, "
           "\"p90\": %llu, \"p99\": %llu, \"max\": %llu, \"mean\": %.1f, \"conn_min\": %llu, "
           "\"conn_median\": %llu, \"conn_max\": %llu, \"zero_conns\": %d}\n",
           all.nlat, (unsigned long long)elapsed, (unsigned long long)all.bytes,
           (unsigned long long)all.e_connect, (unsigned long long)all.e_read, (unsigned long long)all.e_write,
           (unsigned long long)all.e_status, (unsigned long long)all.e_timeout,
           (unsigned long long)pct(all.lat, all.nlat, 50), (unsigned long long)pct(all.lat, all.nlat, 90),
           (unsigned long long)pct(all.lat, all.nlat, 99),
           (unsigned long long)(all.nlat ? all.lat[all.nlat - 1] : 0), all.nlat ? sum / (double)all.nlat : 0.0,
           (unsigned long long)per[0], (unsigned long long)per[nconns / 2], (unsigned long long)per[nconns - 1],
           zero);
    free(per);
    free(all.lat);
    free(conns);
    return 0;
}
