/* sseload: many SSE clients in one thread, cheap per delivery.
 *
 * Opens N connections with "GET PATH HTTP/1.0" (the body then ends with the
 * connection, no chunked framing), reads them with epoll and counts the
 * "data:" lines that arrive. An event's data is the publisher's send time
 * in microseconds (CLOCK_REALTIME), so each delivery's latency is measured
 * here. Prints one JSON line when every connection has received EXPECT
 * events, when DURATION seconds have passed, or on a read of "stop" from
 * stdin.
 *
 * usage: sseload HOST PORT PATH N EXPECT DURATION
 *   EXPECT 0: only connect and hold (memory per idle connection); the line
 *   "connected" is printed on stderr once every connection has its head;
 *   with SSELOAD_NO_HEAD set, once every request is sent (for a server that
 *   sends the head only with the first event).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CARRY 32
#define BUCKETS 200000 /* 10 us each: up to 2 s, the last one holds the rest */

struct conn {
    int fd;
    int headed;       /* the response head has arrived */
    long events;
    char carry[CARRY]; /* the end of the previous read: "data: " may be split */
    int carried;
};

static uint64_t histogram[BUCKETS];

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double percentile(uint64_t total, double p) {
    uint64_t want = (uint64_t)(total * p), seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > want) return i * 0.01; /* ms */
    }
    return (BUCKETS - 1) * 0.01;
}

/* Count the events in buf (prefixed by what was carried), recording each
 * one's latency; keep the tail for the next read. */
static void scan(struct conn *c, const char *data, ssize_t len, int64_t now) {
    static char buf[CARRY + 262144];
    memcpy(buf, c->carry, c->carried);
    memcpy(buf + c->carried, data, len);
    size_t total = c->carried + len, i = 0;
    char *p = buf;
    if (!c->headed) {
        char *end = memmem(buf, total, "\r\n\r\n", 4);
        if (!end) { /* keep what fits; a head is short */
            size_t keep = total < CARRY ? total : CARRY;
            memmove(c->carry, buf + total - keep, keep);
            c->carried = keep;
            return;
        }
        c->headed = 1;
        i = (end + 4) - buf;
    }
    for (;;) {
        /* "data:" then an optional space (strtoll skips it) */
        char *hit = memmem(p + i, total - i, "data:", 5);
        if (!hit) break;
        size_t at = hit - p + 5;
        char *eol = memchr(p + at, '\n', total - at);
        if (!eol) { i = hit - p; goto keep_from; }
        int64_t sent = strtoll(p + at, NULL, 10);
        int64_t lat = now - sent;
        long bucket = lat < 0 ? 0 : lat / 10;
        if (bucket >= BUCKETS) bucket = BUCKETS - 1;
        histogram[bucket]++;
        c->events++;
        i = eol - p + 1;
    }
    /* no "data:" left: carry the last bytes, which may start one */
    i = total > 4 ? total - 4 : 0;
keep_from:
    {
        size_t keep = total - i;
        if (keep > CARRY) { keep = CARRY; i = total - CARRY; }
        memmove(c->carry, p + i, keep);
        c->carried = keep;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH N EXPECT DURATION\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *path = argv[3];
    int n = atoi(argv[4]);
    long expect = atol(argv[5]);
    double duration = atof(argv[6]);

    struct rlimit rl = {n + 64, n + 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    char request[1024];
    int rlen = snprintf(request, sizeof request,
                        "GET %s HTTP/1.0\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
                        path, host);

    int ep = epoll_create1(0);
    struct conn *conns = calloc(n, sizeof *conns);
    for (int k = 0; k < n; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            fprintf(stderr, "connection %d failed: %s\n", k, strerror(errno));
            return 1;
        }
        if (write(fd, request, rlen) != rlen) {
            fprintf(stderr, "request %d not sent\n", k);
            return 1;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[k].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[k]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    fcntl(0, F_SETFL, O_NONBLOCK);

    static char data[262144];
    struct epoll_event ready[512];
    long total = 0, closed = 0, headed = 0, complete = 0;
    int announced = 0;
    if (getenv("SSELOAD_NO_HEAD")) {
        fprintf(stderr, "connected\n");
        announced = 1;
    }
    double start = mono(), first = 0, last = 0;
    while (mono() - start < duration) {
        int count = epoll_wait(ep, ready, 512, 100);
        int64_t now = now_us();
        for (int r = 0; r < count; r++) {
            struct conn *c = ready[r].data.ptr;
            ssize_t got = read(c->fd, data, sizeof data);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                closed++;
                continue;
            }
            int was_headed = c->headed;
            long before = c->events;
            scan(c, data, got, now);
            if (!was_headed && c->headed) headed++;
            if (c->events > before) {
                double t = mono();
                if (!first) first = t;
                last = t;
                total += c->events - before;
                if (expect && before < expect && c->events >= expect) complete++;
            }
        }
        if (!announced && headed == n) {
            fprintf(stderr, "connected\n");
            announced = 1;
        }
        if (expect && complete == n) break;
        if (closed == n) break;
        char line[16];
        if (read(0, line, sizeof line) > 0) break;
    }
    long lo = -1, hi = 0;
    for (int k = 0; k < n; k++) {
        if (lo < 0 || conns[k].events < lo) lo = conns[k].events;
        if (conns[k].events > hi) hi = conns[k].events;
    }
    double span = last > first ? last - first : 0;
    printf("{\"connections\": %d, \"headed\": %ld, \"closed\": %ld, \"events\": %ld,"
           " \"min_per_conn\": %ld, \"max_per_conn\": %ld, \"span_s\": %.4f,"
           " \"deliveries_per_s\": %.0f, \"p50_ms\": %.2f, \"p99_ms\": %.2f,"
           " \"max_ms\": %.2f}\n",
           n, headed, closed, total, lo, hi, span, span > 0 ? total / span : 0.0,
           percentile(total, 0.5), percentile(total, 0.99), percentile(total, 0.999999));
    return 0;
}
