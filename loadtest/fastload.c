/*
 * fastload: SSE subscribers and an HTTP publisher on one epoll loop, one JSON report.
 *
 * The C twin of loadtest/loadgen.py, for when the load must not be the bottleneck:
 * the Python loadgen reads ~1-1.5 M events/s and publishes a few thousand pushes/s
 * on its core, so a fast server outruns its own measurement.  Same wire contract,
 * same report fields (loadtest/fastload.py builds it and drives it for
 * benchmarks/fanout.py --load c).  Only libc; Linux (epoll).
 *
 * Subscribers: N connections (source addresses 127.0.0.2.. bound with
 * IP_BIND_ADDRESS_NO_PORT), GET with the uid in the URL template, the response
 * head checked (200, text/event-stream), chunked bodies de-chunked, the stream
 * parsed per the WHATWG rules (lines end in CRLF, LF or CR; a blank line
 * dispatches an event when a data field was seen; comments counted as
 * heartbeats), latency from the "t":<unix time> in the data against
 * CLOCK_REALTIME, in loadgen's histogram buckets.
 *
 * Publisher: K keep-alive connections with up to F requests in flight each
 * (pipelined HTTP/1.1), one of:
 *   open loop   --rate R: push i is due at start + i/R whatever the answers do;
 *               a push that finds no free slot waits and is counted late, the
 *               schedule goes on (offered / sent / on_schedule in the report);
 *   saturating  --saturate: every slot always busy for --duration;
 *   sequential  --sequential: one connection, the next push after each answer
 *               (paced at R when R > 0).
 * Bodies are loadgen's: {"uids":[...],"events":[{"event":E,"data":{"t":T,"n":N}}]}.
 *
 * Control: without --control the run goes connect, warmup, publish, drain and
 * prints the report.  With --control it prints {"type":"ready",...} once
 * connected, then obeys lines on stdin: "start" (mark the window, start
 * publishing), any other word (a mark, e.g. "stop"), "finish" or EOF (print
 * {"type":"result",...} and exit); a publisher prints {"type":"published"} when
 * its window and the answers' wait are over.  --deadline bounds it all.
 *
 * Usage: fastload --help
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* loadgen's histogram: 10 us buckets below 100 ms, then 1 ms buckets up to 60 s, then overflow. */
#define FINE_BUCKETS 10000
#define COARSE_BUCKETS 60000
#define HIST_SIZE (FINE_BUCKETS + COARSE_BUCKETS + 1)

#define MAX_LINE (1u << 20)  /* a longer SSE line or response head is a broken stream */
#define MAX_INFLIGHT 1024
#define MAX_PUSH_CONNS 1024
#define MAX_SAMPLES 5
#define MAX_MARKS 16

enum { K_SUB = 1, K_PUB = 2, K_STDIN = 3 };
enum { S_IDLE, S_CONNECTING, S_HEAD, S_BODY, S_CLOSED };
enum { CK_SIZE, CK_EXT, CK_DATA, CK_CR, CK_LF, CK_END };
enum { PUB_OPEN, PUB_SATURATE, PUB_SEQUENTIAL };

/* ------------------------------------------------------------------ options */

static struct {
    const char *subscribe_url, *push_url, *mode, *event_type;
    long subscribers, uid_offset, sub_start, sub_stop;
    double duration, rate, warmup, drain, connect_timeout, deadline, late_ms, idle_wait;
    long uids_per_push, events_per_push, sources, connect_concurrency, push_conns, push_inflight;
    long latency_every;
    int sequential, saturate, control, no_publisher;
    const char *headers[32];
    int nheaders;
} opt = {
    .subscribe_url = "http://127.0.0.1:8080/events?uid={uid}",
    .push_url = "http://127.0.0.1:8080/push",
    .mode = "broadcast",
    .event_type = "tick",
    .subscribers = 100,
    .sub_start = -1,
    .sub_stop = -1,
    .duration = 10.0,
    .warmup = 1.0,
    .drain = 2.0,
    .connect_timeout = 120.0,
    .late_ms = 5.0,
    .idle_wait = 5.0,
    .uids_per_push = 1,
    .events_per_push = 1,
    .connect_concurrency = 500,
    .push_conns = 4,
    .push_inflight = 16,
    .latency_every = 1,
};

/* ------------------------------------------------------------------ clocks, output helpers */

/* libc only (no libm): rounding of the non-negative figures the report prints */
static double round_to(double v, double scale) { return (double)(long long)(v * scale + 0.5) / scale; }

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct { char *p; size_t n, cap; } buf;

static void buf_reserve(buf *b, size_t more) {
    if (b->n + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { fprintf(stderr, "fastload: out of memory\n"); exit(2); }
    b->p = q;
    b->cap = cap;
}

static void buf_add(buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void buf_printf(buf *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->n;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < room) { b->n += (size_t)k; return; }
        buf_reserve(b, (size_t)k + 1);
    }
}

static void buf_json_str(buf *b, const char *s, size_t n) {
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { buf_add(b, "\\", 1); buf_add(b, &s[i], 1); }
        else if (c < 0x20 || c >= 0x7f) buf_printf(b, "\\u%04x", c);
        else buf_add(b, &s[i], 1);
    }
    buf_add(b, "\"", 1);
}

/* A figure, or null for "none" (the percentiles of an empty histogram are -1). */
static void buf_json_num(buf *b, double v, int nd) {
    if (v >= 0 && v < 1e300) buf_printf(b, "%.*f", nd, v);
    else buf_add(b, "null", 4);
}

typedef struct { char text[MAX_SAMPLES][200]; int n; } samples;

static void note(samples *s, const char *fmt, ...) {
    if (s->n >= MAX_SAMPLES) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text[s->n++], sizeof s->text[0], fmt, ap);
    va_end(ap);
}

static void buf_samples(buf *b, const samples *s) {
    buf_add(b, "[", 1);
    for (int i = 0; i < s->n; i++) {
        if (i) buf_add(b, ", ", 2);
        buf_json_str(b, s->text[i], strlen(s->text[i]));
    }
    buf_add(b, "]", 1);
}

/* ------------------------------------------------------------------ histogram (loadgen's buckets) */

typedef struct { uint64_t *c; uint64_t total; double max_coarse; } hist;

static void hist_init(hist *h) { h->c = calloc(HIST_SIZE, sizeof *h->c); h->total = 0; h->max_coarse = 0; }

static inline void hist_add(hist *h, double lat) {
    int b;
    if (lat < 0.1) b = lat > 0 ? (int)(lat * 100000) : 0;
    else {
        long k = FINE_BUCKETS + (long)(lat * 1000);
        b = k < HIST_SIZE ? (int)k : HIST_SIZE - 1;
        if (lat > h->max_coarse) h->max_coarse = lat;
    }
    h->c[b]++;
    h->total++;
}

static double bucket_value(int b) {  /* upper edge, seconds */
    if (b < FINE_BUCKETS) return (b + 1) / 100000.0;
    return (b - FINE_BUCKETS + 1) / 1000.0;
}

/* Percentile in ms as loadgen computes it: the bucket holding rank ceil(total*q/100). */
static double hist_pct(const hist *h, double q) {
    if (!h->total) return -1;
    double exact = (double)h->total * q / 100.0;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact) rank++;  /* ceil */
    if (rank < 1) rank = 1;
    uint64_t acc = 0;
    for (int b = 0; b < HIST_SIZE; b++) {
        acc += h->c[b];
        if (acc >= rank) return round_to(bucket_value(b) * 1000, 1000);
    }
    return -1;
}

static double hist_max_ms(const hist *h) {
    if (!h->total) return -1;
    double m = h->max_coarse;
    if (m < 0.1) {
        for (int b = HIST_SIZE - 1; b >= 0; b--)
            if (h->c[b]) { m = bucket_value(b); break; }
    }
    return round_to(m * 1000, 1000);
}

static void buf_pcts(buf *b, const hist *h) {
    static const double qs[] = {50, 90, 99};
    static const char *names[] = {"p50", "p90", "p99"};
    buf_add(b, "{", 1);
    for (int i = 0; i < 3; i++) {
        buf_printf(b, "\"%s\": ", names[i]);
        buf_json_num(b, hist_pct(h, qs[i]), 3);
        buf_add(b, ", ", 2);
    }
    buf_add(b, "\"max\": ", 7);
    buf_json_num(b, hist_max_ms(h), 3);
    buf_add(b, "}", 1);
}

static void buf_hist_raw(buf *b, const hist *h) {
    buf_add(b, "{", 1);
    int first = 1;
    for (int i = 0; i < HIST_SIZE; i++) {
        if (!h->c[i]) continue;
        buf_printf(b, "%s\"%d\": %llu", first ? "" : ", ", i, (unsigned long long)h->c[i]);
        first = 0;
    }
    buf_add(b, "}", 1);
}

/* ------------------------------------------------------------------ URLs */

typedef struct { char host[256]; int port; struct sockaddr_in addr; const char *target; } url;

static int parse_url(const char *s, url *u, const char *what) {
    if (strncmp(s, "http://", 7) != 0) {
        fprintf(stderr, "fastload: %s: only http:// URLs (got %s)\n", what, s);
        return -1;
    }
    s += 7;
    const char *slash = strchr(s, '/');
    const char *hp_end = slash ? slash : s + strlen(s);
    const char *colon = memchr(s, ':', (size_t)(hp_end - s));
    size_t hl = (size_t)((colon ? colon : hp_end) - s);
    if (hl == 0 || hl >= sizeof u->host) { fprintf(stderr, "fastload: %s: bad host\n", what); return -1; }
    memcpy(u->host, s, hl);
    u->host[hl] = 0;
    u->port = colon ? atoi(colon + 1) : 80;
    u->target = slash ? slash : "/";
    memset(&u->addr, 0, sizeof u->addr);
    u->addr.sin_family = AF_INET;
    u->addr.sin_port = htons((unsigned short)u->port);
    const char *h = strcmp(u->host, "localhost") == 0 ? "127.0.0.1" : u->host;
    if (inet_pton(AF_INET, h, &u->addr.sin_addr) != 1) {
        fprintf(stderr, "fastload: %s: host must be an IPv4 address or localhost (got %s)\n", what, u->host);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ subscribers */

typedef struct {
    int fd;
    uint8_t state, chunked, track, data_seen, t_found, skip_lf, first_line, ck_state;
    uint64_t ck_left;
    double t;
    char *line;  /* response head, or an unterminated SSE line */
    uint32_t line_len, line_cap;
} sub;

static struct {
    sub *s;
    long n, next, connecting, pending_heads;
    uint64_t attempts, established, connect_errors, http_errors, parse_errors, disconnects;
    uint64_t events, bytes, heartbeats, lat_count, open;
    int closing;
    hist lat;
    samples errs;
    double now_real;  /* CLOCK_REALTIME at the read being parsed */
    url u;
    int sources;
} S;

static int epfd;
static char rbuf[1 << 17];

static void sub_close(sub *s, int counted_disconnect) {
    if (s->state == S_CLOSED) return;
    if (s->state == S_BODY) {
        S.open--;
        if (counted_disconnect && !S.closing) S.disconnects++;
    }
    if (s->state == S_CONNECTING) S.connecting--;
    if (s->state == S_CONNECTING || s->state == S_HEAD || s->state == S_IDLE) S.pending_heads--;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->state = S_CLOSED;
    free(s->line);
    s->line = NULL;
    s->line_len = s->line_cap = 0;
}

static int line_append(sub *s, const char *p, size_t n) {
    if (s->line_len + n > MAX_LINE) return -1;
    if (s->line_len + n > s->line_cap) {
        uint32_t cap = s->line_cap ? s->line_cap : 256;
        while (cap < s->line_len + n) cap *= 2;
        char *q = realloc(s->line, cap);
        if (!q) return -1;
        s->line = q;
        s->line_cap = cap;
    }
    memcpy(s->line + s->line_len, p, n);
    s->line_len += (uint32_t)n;
    return 0;
}

/* The number after "t": in an event's data (the publisher's CLOCK_REALTIME); 0 if none. */
static int parse_t(const char *v, size_t n, double *out) {
    const char *k = memmem(v, n, "\"t\":", 4);
    if (!k) return 0;
    const char *p = k + 4, *end = v + n;
    while (p < end && *p == ' ') p++;
    const char *start = p;
    int neg = 0;
    if (p < end && *p == '-') { neg = 1; p++; }
    uint64_t ip = 0, fp = 0;
    int idig = 0, fdig = 0;
    while (p < end && *p >= '0' && *p <= '9' && idig < 18) { ip = ip * 10 + (uint64_t)(*p - '0'); p++; idig++; }
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') {
            if (fdig < 15) { fp = fp * 10 + (uint64_t)(*p - '0'); fdig++; }
            p++;
        }
    }
    if (!idig) return 0;
    if (p < end && ((*p >= '0' && *p <= '9') || *p == 'e' || *p == 'E')) {  /* rare forms: strtod */
        char tmp[64];
        size_t l = (size_t)(end - start) < sizeof tmp - 1 ? (size_t)(end - start) : sizeof tmp - 1;
        memcpy(tmp, start, l);
        tmp[l] = 0;
        char *e;
        double d = strtod(tmp, &e);
        if (e == tmp) return 0;
        *out = d;
        return 1;
    }
    static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    double d = (double)ip + (double)fp / p10[fdig];
    *out = neg ? -d : d;
    return 1;
}

static void sse_line(sub *s, const char *p, size_t n) {
    if (s->first_line) {  /* a UTF-8 BOM at the start of the stream is dropped */
        s->first_line = 0;
        if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) { p += 3; n -= 3; }
    }
    if (n == 0) {  /* dispatch */
        if (s->data_seen) {
            S.events++;
            if (s->track && s->t_found) {
                hist_add(&S.lat, S.now_real - s->t);
                S.lat_count++;
            }
        }
        s->data_seen = 0;
        s->t_found = 0;
        return;
    }
    if (p[0] == ':') { S.heartbeats++; return; }
    const char *colon = memchr(p, ':', n);
    size_t fl = colon ? (size_t)(colon - p) : n;
    if (fl == 4 && memcmp(p, "data", 4) == 0) {
        s->data_seen = 1;
        if (s->track && !s->t_found && colon) {
            const char *v = colon + 1;
            size_t vl = n - fl - 1;
            double t;
            if (parse_t(v, vl, &t)) { s->t = t; s->t_found = 1; }
        }
    }
    /* event, id and retry change nothing that is counted; other fields are ignored (WHATWG) */
}

static int sse_feed(sub *s, const char *p, size_t n) {
    size_t i = 0;
    ssize_t next_lf = -1, next_cr = -1;
    if (s->skip_lf && n) {
        s->skip_lf = 0;
        if (p[0] == '\n') i = 1;
    }
    while (i < n) {
        if (next_lf < (ssize_t)i) {
            const char *q = memchr(p + i, '\n', n - i);
            next_lf = q ? q - p : (ssize_t)n;
        }
        if (next_cr < (ssize_t)i) {
            const char *q = memchr(p + i, '\r', n - i);
            next_cr = q ? q - p : (ssize_t)n;
        }
        size_t end = (size_t)(next_lf < next_cr ? next_lf : next_cr);
        if (end == n) break;
        if (s->line_len) {
            if (line_append(s, p + i, end - i) < 0) return -1;
            size_t whole = s->line_len;
            s->line_len = 0;  /* sse_line does not touch the buffer: safe to reuse at once */
            sse_line(s, s->line, whole);
        } else {
            sse_line(s, p + i, end - i);
        }
        if (p[end] == '\r') {
            if (end + 1 < n) { if (p[end + 1] == '\n') end++; }
            else s->skip_lf = 1;
        }
        i = end + 1;
    }
    if (i < n && line_append(s, p + i, n - i) < 0) return -1;
    return 0;
}

/* Body bytes: de-chunk when chunked, feed the SSE parser.  -1: broken; 1: the stream ended. */
static int sub_body(sub *s, const char *p, size_t n) {
    if (!s->chunked) return sse_feed(s, p, n);
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        switch (s->ck_state) {
        case CK_SIZE:
            if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
                int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
                if (s->ck_left > (1ull << 40)) return -1;
                s->ck_left = s->ck_left * 16 + (uint64_t)d;
                i++;
            } else if (c == ';' || c == ' ' || c == '\t') { s->ck_state = CK_EXT; i++; }
            else if (c == '\r') { i++; }
            else if (c == '\n') {
                i++;
                if (s->ck_left == 0) { s->ck_state = CK_END; return 1; }
                s->ck_state = CK_DATA;
            } else return -1;
            break;
        case CK_EXT:
            if (c == '\n') {
                i++;
                if (s->ck_left == 0) { s->ck_state = CK_END; return 1; }
                s->ck_state = CK_DATA;
            } else i++;
            break;
        case CK_DATA: {
            size_t take = n - i < s->ck_left ? n - i : (size_t)s->ck_left;
            if (sse_feed(s, p + i, take) < 0) return -1;
            i += take;
            s->ck_left -= take;
            if (!s->ck_left) s->ck_state = CK_CR;
            break;
        }
        case CK_CR:
            if (c == '\r') { s->ck_state = CK_LF; i++; }
            else if (c == '\n') { s->ck_state = CK_SIZE; i++; }
            else return -1;
            break;
        case CK_LF:
            if (c != '\n') return -1;
            s->ck_state = CK_SIZE;
            i++;
            break;
        default:
            return 1;
        }
    }
    return 0;
}

static int header_has(const char *head, size_t n, const char *name, const char *needle) {
    size_t nl = strlen(name);
    const char *p = head, *end = head + n;
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!e) e = end;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            size_t vl = (size_t)(e - p) - nl - 1;
            char v[512];
            if (vl >= sizeof v) vl = sizeof v - 1;
            memcpy(v, p + nl + 1, vl);
            v[vl] = 0;
            if (!needle || strcasestr(v, needle)) return 1;
        }
        p = e + 2;
    }
    return 0;
}

static void sub_readable(sub *s) {
    ssize_t r = read(s->fd, rbuf, sizeof rbuf);
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        if (s->state == S_HEAD) { S.connect_errors++; note(&S.errs, "read before response head: %s", strerror(errno)); }
        sub_close(s, 1);
        return;
    }
    if (r == 0) {
        if (s->state == S_HEAD) { S.connect_errors++; note(&S.errs, "closed before response head"); }
        sub_close(s, 1);
        return;
    }
    S.bytes += (uint64_t)r;
    const char *p = rbuf;
    size_t n = (size_t)r;
    if (s->state == S_HEAD) {
        size_t old = s->line_len;
        if (line_append(s, p, n) < 0) { S.parse_errors++; note(&S.errs, "response head too long"); sub_close(s, 0); return; }
        size_t from = old > 3 ? old - 3 : 0;
        char *he = memmem(s->line + from, s->line_len - from, "\r\n\r\n", 4);
        if (!he) {
            if (s->line_len > 65536) { S.parse_errors++; note(&S.errs, "response head too long"); sub_close(s, 0); }
            return;
        }
        size_t hl = (size_t)(he - s->line);
        char *sp = memchr(s->line, ' ', hl);
        int status = sp ? atoi(sp + 1) : 0;
        if (status != 200) {
            char *eol = memmem(s->line, hl, "\r\n", 2);
            int l = (int)((eol ? eol : he) - s->line);
            S.http_errors++;
            note(&S.errs, "status line '%.*s'", l > 120 ? 120 : l, s->line);
            sub_close(s, 0);
            return;
        }
        if (!header_has(s->line, hl, "content-type", "text/event-stream")) {
            S.http_errors++;
            note(&S.errs, "200 without content-type text/event-stream");
            sub_close(s, 0);
            return;
        }
        s->chunked = (uint8_t)header_has(s->line, hl, "transfer-encoding", "chunked");
        s->state = S_BODY;
        S.established++;
        S.open++;
        S.pending_heads--;
        size_t rest = s->line_len - hl - 4;
        /* the rest of this read follows the head in rbuf */
        p = rbuf + (n - rest);
        n = rest;
        s->line_len = 0;
        if (!n) return;
    }
    S.now_real = realtime();
    int rc = sub_body(s, p, n);
    if (rc < 0) {
        S.parse_errors++;
        note(&S.errs, "broken stream (bad chunk or line over %u bytes)", MAX_LINE);
        sub_close(s, 0);
    } else if (rc > 0) {
        sub_close(s, 1);  /* last chunk: the server ended the stream */
    }
}

static void sub_request(sub *s, long index) {
    char uid[32];
    snprintf(uid, sizeof uid, "%ld", opt.uid_offset + index);
    buf b = {0};
    buf_add(&b, "GET ", 4);
    const char *t = S.u.target;
    for (const char *k; (k = strstr(t, "{uid}")); t = k + 5) {
        buf_add(&b, t, (size_t)(k - t));
        buf_add(&b, uid, strlen(uid));
    }
    buf_add(&b, t, strlen(t));
    buf_printf(&b, " HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
               S.u.host, S.u.port);
    ssize_t w = write(s->fd, b.p, b.n);
    free(b.p);
    if (w != (ssize_t)b.n) {
        S.connect_errors++;
        note(&S.errs, "request write: %s", w < 0 ? strerror(errno) : "short write");
        sub_close(s, 0);
        return;
    }
    s->state = S_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)K_SUB << 56) | (uint64_t)(s - S.s)};
    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void sub_connected(sub *s) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    S.connecting--;
    s->state = S_IDLE;
    if (err) {
        S.connect_errors++;
        note(&S.errs, "connect: %s", strerror(err));
        sub_close(s, 0);
        return;
    }
    sub_request(s, opt.sub_start + (s - S.s));
}

static void subs_connect_more(void) {
    while (S.next < S.n && S.connecting < opt.connect_concurrency) {
        long i = S.next++;
        long gi = opt.sub_start + i;  /* global index: the uid and the source address */
        sub *s = &S.s[i];
        s->first_line = 1;
        s->track = (uint8_t)((gi % opt.latency_every) == 0);
        S.attempts++;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            S.connect_errors++;
            S.pending_heads--;
            s->state = S_CLOSED;
            note(&S.errs, "socket: %s", strerror(errno));
            continue;
        }
        s->fd = fd;
        int one = 1;
        setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(2 + gi % S.sources));
        if ((S.u.addr.sin_addr.s_addr & htonl(0xff000000u)) == htonl(127u << 24) &&
            bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            S.connect_errors++;
            note(&S.errs, "bind: %s", strerror(errno));
            s->state = S_IDLE;
            sub_close(s, 0);
            continue;
        }
        s->state = S_CONNECTING;
        S.connecting++;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = ((uint64_t)K_SUB << 56) | (uint64_t)i};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        if (connect(fd, (struct sockaddr *)&S.u.addr, sizeof S.u.addr) < 0 && errno != EINPROGRESS) {
            S.connect_errors++;
            note(&S.errs, "connect: %s", strerror(errno));
            sub_close(s, 0);
        }
    }
}

/* ------------------------------------------------------------------ publisher */

typedef struct { double sent, due; uint32_t expect; uint8_t on_time; } inflight;

typedef struct {
    int fd, idx;
    uint32_t gen;
    int connected, dirty;
    buf out;
    size_t out_off;
    buf in;
    inflight *q;
    int q_head, q_n;
} pconn;

static struct {
    int kind, active, done, nconns;
    url u;
    pconn *c;
    double started, finished, end_at, hard_end;
    int64_t total, n;  /* scheduled pushes, pushes sent */
    int64_t sent, acked, failed, waited, late, on_schedule, reconnects, retry_after, connect_errors;
    int64_t expected_per_subscriber, expected_unicast;
    int waiting_counted;  /* push n already counted as waiting for a slot */
    uint64_t status[600];
    hist rtt, lag;
    samples errs;
    long *perm;  /* uid permutation for picking distinct uids */
    uint64_t rng;
    int rr;
    buf head;  /* request head up to "Content-Length: " */
} P;

static uint64_t rnd(void) {
    P.rng ^= P.rng << 13;
    P.rng ^= P.rng >> 7;
    P.rng ^= P.rng << 17;
    return P.rng;
}

static void pub_fail_inflight(pconn *c, const char *why) {
    while (c->q_n) {
        P.failed++;
        c->q_head = (c->q_head + 1) % (int)opt.push_inflight;
        c->q_n--;
    }
    note(&P.errs, "%s", why);
}

static int pub_connect(pconn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { P.connect_errors++; note(&P.errs, "push socket: %s", strerror(errno)); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gen++;
    c->connected = 0;
    c->out.n = c->out_off = 0;
    c->in.n = 0;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN,
                             .data.u64 = ((uint64_t)K_PUB << 56) | ((uint64_t)c->gen << 24) | (uint64_t)c->idx};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    if (connect(fd, (struct sockaddr *)&P.u.addr, sizeof P.u.addr) < 0 && errno != EINPROGRESS) {
        P.connect_errors++;
        note(&P.errs, "push connect: %s", strerror(errno));
        close(fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void pub_lost(pconn *c, const char *why) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->connected = 0;
    if (c->q_n) pub_fail_inflight(c, why);
    if (!P.done && P.reconnects < 1000) {
        P.reconnects++;
        pub_connect(c);
    }
}

static int pushes_pending(void) {
    for (int i = 0; i < P.nconns; i++)
        if (P.c[i].q_n) return 1;
    return 0;
}

/* One push request on c, due at `due` (monotonic). */
static void pub_send(pconn *c, double due, double now) {
    char body[1 << 16];
    size_t bl = 0;
    long E = opt.events_per_push;
    uint32_t expect;
    int uni = strcmp(opt.mode, "unicast") == 0;
    bl += (size_t)snprintf(body + bl, sizeof body - bl, "{\"uids\":[");
    if (uni) {
        long pool = opt.subscribers > 0 ? opt.subscribers : 1;
        long U = opt.uids_per_push < pool ? opt.uids_per_push : pool;
        for (long k = 0; k < U; k++) {  /* partial Fisher-Yates: U distinct uids */
            long j = k + (long)(rnd() % (uint64_t)(pool - k));
            long tmp = P.perm[k];
            P.perm[k] = P.perm[j];
            P.perm[j] = tmp;
            bl += (size_t)snprintf(body + bl, sizeof body - bl, "%s\"%ld\"", k ? "," : "", opt.uid_offset + P.perm[k]);
            if (bl > sizeof body - 4096) { U = k + 1; break; }
        }
        expect = (uint32_t)(U * E);
    } else {
        expect = (uint32_t)E;
    }
    double t = realtime();
    bl += (size_t)snprintf(body + bl, sizeof body - bl, "],\"events\":[");
    for (long k = 0; k < E && bl < sizeof body - 256; k++)
        bl += (size_t)snprintf(body + bl, sizeof body - bl, "%s{\"event\":\"%s\",\"data\":{\"t\":%.6f,\"n\":%lld}}",
                               k ? "," : "", opt.event_type, t, (long long)(P.n * E + k));
    bl += (size_t)snprintf(body + bl, sizeof body - bl, "]}");
    buf_add(&c->out, P.head.p, P.head.n);
    buf_printf(&c->out, "%zu\r\n\r\n", bl);
    buf_add(&c->out, body, bl);
    int slot = (c->q_head + c->q_n) % (int)opt.push_inflight;
    double lag = now - due;
    if (lag < 0) lag = 0;
    c->q[slot] = (inflight){.sent = now, .due = due, .expect = expect, .on_time = lag * 1000 <= opt.late_ms};
    c->q_n++;
    if (!c->q[slot].on_time) P.late++;
    hist_add(&P.lag, lag);
    c->dirty = 1;
    P.sent++;
    P.n++;
}

static void pub_activate(double now) {
    P.active = 1;
    P.started = now;
    P.end_at = now + opt.duration;
    P.hard_end = now + opt.duration + 5.0;
    P.total = P.kind == PUB_OPEN ? (int64_t)(opt.rate * opt.duration) : 0;
}

static pconn *free_slot(void) {
    for (int k = 0; k < P.nconns; k++) {
        pconn *c = &P.c[(P.rr + k) % P.nconns];
        if (c->connected && c->q_n < opt.push_inflight) {
            P.rr = (P.rr + k + 1) % P.nconns;
            return c;
        }
    }
    return NULL;
}

/* Send whatever the schedule says is due now; returns the next time it wants to wake (or 0). */
static double pub_pump(double now) {
    if (!P.active || P.done) return 0;
    if (P.kind == PUB_OPEN) {
        if (P.n >= P.total || now > P.hard_end) { if (!P.finished) P.finished = now; return 0; }
        while (P.n < P.total) {
            double due = P.started + (double)P.n / opt.rate;
            if (due > now) return due;
            pconn *c = free_slot();
            if (!c) {
                if (!P.waiting_counted) { P.waited++; P.waiting_counted = 1; }
                int alive = 0;
                for (int i = 0; i < P.nconns; i++) alive |= P.c[i].fd >= 0;
                if (!alive) { P.finished = now; return 0; }  /* nothing left to send on */
                return P.hard_end;  /* an answer frees a slot and calls us again; or the window ends */
            }
            P.waiting_counted = 0;
            pub_send(c, due, now);
        }
        if (!P.finished) P.finished = now;
        return 0;
    }
    if (now >= P.end_at) { if (!P.finished) P.finished = now; return 0; }
    if (P.kind == PUB_SATURATE) {
        pconn *c;
        while ((c = free_slot())) pub_send(c, now, now);
        return P.end_at;
    }
    /* sequential */
    pconn *c = &P.c[0];
    if (!c->connected || c->q_n) return P.end_at;
    double due = opt.rate > 0 ? P.started + (double)P.n / opt.rate : now;
    if (due > now) return due;
    pub_send(c, due > 0 ? due : now, now);
    return P.end_at;
}

static long parse_chunked_len(const char *p, size_t n) {
    size_t i = 0;
    for (;;) {
        const char *e = memmem(p + i, n - i, "\r\n", 2);
        if (!e) return -1;
        unsigned long size = strtoul(p + i, NULL, 16);
        i = (size_t)(e - p) + 2;
        if (size == 0) {  /* trailers up to an empty line */
            for (;;) {
                const char *t = memmem(p + i, n - i, "\r\n", 2);
                if (!t) return -1;
                size_t tl = (size_t)(t - (p + i));
                i = (size_t)(t - p) + 2;
                if (tl == 0) return (long)i;
            }
        }
        if (i + size + 2 > n) return -1;
        i += size + 2;
    }
}

static void pub_answer(pconn *c, int status, int retry_after, double now) {
    if (!c->q_n) { note(&P.errs, "an answer nobody asked for (status %d)", status); return; }
    inflight *r = &c->q[c->q_head];
    c->q_head = (c->q_head + 1) % (int)opt.push_inflight;
    c->q_n--;
    if (status > 0 && status < 600) P.status[status]++;
    if (status == 200) {
        P.acked++;
        if (r->on_time) P.on_schedule++;
        if (strcmp(opt.mode, "unicast") == 0) P.expected_unicast += r->expect;
        else P.expected_per_subscriber += r->expect;
        hist_add(&P.rtt, now - r->sent);
    } else {
        P.failed++;
        if (status == 503 && retry_after) P.retry_after++;
        note(&P.errs, "HTTP %d%s", status, status == 503 && retry_after ? " with Retry-After" : "");
    }
}

static void pub_readable(pconn *c) {
    for (;;) {
        buf_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.p + c->in.n, c->in.cap - c->in.n);
        if (r > 0) { c->in.n += (size_t)r; if ((size_t)r < 65536) break; continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        pub_lost(c, r == 0 ? "push connection closed by the server" : "push connection error");
        return;
    }
    double now = mono();
    size_t off = 0;
    int must_close = 0;
    while (off < c->in.n) {
        const char *p = c->in.p + off;
        size_t n = c->in.n - off;
        const char *he = memmem(p, n, "\r\n\r\n", 4);
        if (!he) break;
        size_t hl = (size_t)(he - p);
        const char *sp = memchr(p, ' ', hl);
        int status = sp ? atoi(sp + 1) : 0;
        long body = 0;
        int chunked = header_has(p, hl, "transfer-encoding", "chunked");
        if (chunked) {
            body = parse_chunked_len(he + 4, n - hl - 4);
            if (body < 0) break;
        } else {
            const char *cl = NULL;
            for (const char *q = p; q < he; ) {
                const char *e = memmem(q, (size_t)(he - q) + 2, "\r\n", 2);
                if (!e) break;
                if (strncasecmp(q, "content-length:", 15) == 0) { cl = q + 15; break; }
                q = e + 2;
            }
            body = cl ? strtol(cl, NULL, 10) : 0;
            if (hl + 4 + (size_t)body > n) break;
        }
        int ra = header_has(p, hl, "retry-after", NULL);
        if (header_has(p, hl, "connection", "close")) must_close = 1;
        pub_answer(c, status, ra, now);
        off += hl + 4 + (size_t)body;
        if (must_close) break;
    }
    if (off) {
        memmove(c->in.p, c->in.p + off, c->in.n - off);
        c->in.n -= off;
    }
    if (must_close) pub_lost(c, "the server closed a push connection (connection: close)");
    pub_pump(now);
}

static void pub_flush(pconn *c) {
    while (c->out_off < c->out.n) {
        ssize_t w = write(c->fd, c->out.p + c->out_off, c->out.n - c->out_off);
        if (w > 0) { c->out_off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                                     .data.u64 = ((uint64_t)K_PUB << 56) | ((uint64_t)c->gen << 24) | (uint64_t)c->idx};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        pub_lost(c, "push write failed");
        return;
    }
    c->out.n = c->out_off = 0;
}

static void pub_event(pconn *c, uint32_t events) {
    if (!c->connected && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            char why[160];
            snprintf(why, sizeof why, "push connect: %s", strerror(err));
            close(c->fd);
            c->fd = -1;
            P.connect_errors++;
            note(&P.errs, "%s", why);
            return;
        }
        c->connected = 1;
    }
    if (events & EPOLLIN) { pub_readable(c); if (c->fd < 0 || !c->connected) return; }
    else if (events & (EPOLLERR | EPOLLHUP)) { pub_lost(c, "push connection hung up"); return; }
    if (events & EPOLLOUT) {
        pub_flush(c);
        if (c->fd >= 0 && c->out_off == c->out.n) {
            struct epoll_event ev = {.events = EPOLLIN,
                                     .data.u64 = ((uint64_t)K_PUB << 56) | ((uint64_t)c->gen << 24) | (uint64_t)c->idx};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
}

/* ------------------------------------------------------------------ marks and reports */

static struct { char name[32]; double t; uint64_t events; } marks[MAX_MARKS];
static int nmarks;
static double t_start_mono, t_stop_mono, connect_seconds;

static void mark(const char *name) {
    if (nmarks >= MAX_MARKS) return;
    snprintf(marks[nmarks].name, sizeof marks[0].name, "%s", name);
    marks[nmarks].t = realtime();
    marks[nmarks].events = S.events;
    nmarks++;
    if (strcmp(name, "start") == 0) t_start_mono = mono();
    if (strcmp(name, "stop") == 0) t_stop_mono = mono();
}

static int find_mark(const char *name) {
    for (int i = nmarks - 1; i >= 0; i--)
        if (strcmp(marks[i].name, name) == 0) return i;
    return -1;
}

static const char *kind_name(void) {
    return P.kind == PUB_OPEN ? "open" : P.kind == PUB_SATURATE ? "saturate" : "sequential";
}

static void buf_publisher(buf *b) {
    double elapsed = (P.finished ? P.finished : mono()) - (P.started ? P.started : mono());
    double window = (t_stop_mono ? t_stop_mono : mono()) - (P.started ? P.started : mono());
    buf_printf(b, "{\"mode\": \"%s\", \"kind\": \"%s\", \"target_rate\": ", opt.mode, kind_name());
    buf_json_num(b, opt.rate, 3);
    buf_printf(b, ", \"offered\": %lld, \"sent\": %lld, \"acked\": %lld, \"failed\": %lld, "
                  "\"on_schedule\": %lld, \"late\": %lld, \"waited_for_connection\": %lld, "
                  "\"connections\": %d, \"in_flight_per_connection\": %ld, \"reconnects\": %lld, \"connect_errors\": %lld, ",
               (long long)(P.kind == PUB_OPEN ? P.total : P.sent), (long long)P.sent, (long long)P.acked,
               (long long)P.failed, (long long)P.on_schedule, (long long)P.late, (long long)P.waited, P.nconns,
               opt.push_inflight, (long long)P.reconnects, (long long)P.connect_errors);
    buf_add(b, "\"achieved_rate\": ", 17);
    buf_json_num(b, elapsed > 0 ? round_to(P.sent / elapsed, 100) : 0.0, 2);
    buf_add(b, ", \"acked_rate\": ", 16);
    buf_json_num(b, window > 0 ? round_to(P.acked / window, 100) : 0.0, 2);
    buf_add(b, ", \"push_rtt_ms\": ", 17);
    buf_pcts(b, &P.rtt);
    buf_add(b, ", \"schedule_lag_ms\": ", 21);
    buf_pcts(b, &P.lag);
    buf_add(b, ", \"statuses\": {", 15);
    int first = 1;
    for (int i = 0; i < 600; i++)
        if (P.status[i]) { buf_printf(b, "%s\"%d\": %llu", first ? "" : ", ", i, (unsigned long long)P.status[i]); first = 0; }
    buf_printf(b, "}, \"retry_after\": %lld, \"expected_per_subscriber\": %lld, \"expected_unicast\": %lld, "
                  "\"error_samples\": ",
               (long long)P.retry_after, (long long)P.expected_per_subscriber, (long long)P.expected_unicast);
    buf_samples(b, &P.errs);
    buf_add(b, "}", 1);
}

static void print_report(int control) {
    buf b = {0};
    double window = (t_stop_mono ? t_stop_mono : mono()) - (t_start_mono ? t_start_mono : mono());
    int ms = find_mark("start"), me = find_mark("stop");
    uint64_t ev0 = ms >= 0 ? marks[ms].events : 0, ev1 = me >= 0 ? marks[me].events : S.events;
    buf_add(&b, "{", 1);
    if (control) buf_add(&b, "\"type\": \"result\", ", 18);
    buf_add(&b, "\"tool\": \"fastload\", \"config\": {\"subscribe_url\": ", 48);
    buf_json_str(&b, opt.subscribe_url, strlen(opt.subscribe_url));
    buf_add(&b, ", \"push_url\": ", 14);
    buf_json_str(&b, opt.push_url, strlen(opt.push_url));
    buf_printf(&b, ", \"subscribers\": %ld, \"sub_range\": [%ld, %ld], \"uid_offset\": %ld, \"duration\": %g, "
                   "\"rate\": %g, \"mode\": \"%s\", \"uids_per_push\": %ld, \"events_per_push\": %ld, "
                   "\"sequential\": %s, \"saturate\": %s, \"push_conns\": %ld, \"push_inflight\": %ld, "
                   "\"latency_every\": %ld, \"late_ms\": %g}",
               opt.subscribers, opt.sub_start, opt.sub_stop, opt.uid_offset, opt.duration, opt.rate, opt.mode,
               opt.uids_per_push, opt.events_per_push, opt.sequential ? "true" : "false",
               opt.saturate ? "true" : "false", opt.push_conns, opt.push_inflight, opt.latency_every, opt.late_ms);
    buf_printf(&b, ", \"procs\": %d, \"subscribers\": %llu, \"connect_seconds\": %.3f, \"window_seconds\": %.3f",
               S.n > 0 ? 1 : 0, (unsigned long long)S.established, connect_seconds, window);
    buf_printf(&b, ", \"attempts\": %llu, \"established\": %llu, \"connect_errors\": %llu, \"http_errors\": %llu, "
                   "\"parse_errors\": %llu, \"disconnects\": %llu, \"events\": %llu, \"bytes\": %llu, "
                   "\"heartbeats\": %llu, \"open_at_end\": %llu, \"lat_count\": %llu, \"latency_ms\": ",
               (unsigned long long)S.attempts, (unsigned long long)S.established,
               (unsigned long long)S.connect_errors, (unsigned long long)S.http_errors,
               (unsigned long long)S.parse_errors, (unsigned long long)S.disconnects, (unsigned long long)S.events,
               (unsigned long long)S.bytes, (unsigned long long)S.heartbeats, (unsigned long long)S.open,
               (unsigned long long)S.lat_count);
    buf_pcts(&b, &S.lat);
    buf_printf(&b, ", \"events_window\": %llu, \"events_per_s\": ", (unsigned long long)(ev1 - ev0));
    buf_json_num(&b, window > 0 ? round_to((double)(ev1 - ev0) / window, 10) : 0.0, 1);
    buf_add(&b, ", \"error_samples\": ", 19);
    buf_samples(&b, &S.errs);
    buf_add(&b, ", \"hist\": ", 10);
    buf_hist_raw(&b, &S.lat);
    buf_add(&b, ", \"lat_max\": ", 13);
    buf_json_num(&b, S.lat.max_coarse, 6);
    buf_add(&b, ", \"window\": {", 13);
    for (int i = 0; i < nmarks; i++)
        buf_printf(&b, "%s\"%s\": %.6f, \"%s_events\": %llu", i ? ", " : "", marks[i].name, marks[i].t,
                   marks[i].name, (unsigned long long)marks[i].events);
    buf_add(&b, "}", 1);
    uint64_t errors = S.connect_errors + S.http_errors + S.parse_errors;
    if (P.nconns) {
        buf_add(&b, ", \"publisher\": ", 15);
        buf_publisher(&b);
        int64_t expected = strcmp(opt.mode, "unicast") == 0 ? P.expected_unicast
                                                            : P.expected_per_subscriber * (int64_t)S.established;
        buf_printf(&b, ", \"expected_events\": %lld, \"delivered_ratio\": ", (long long)expected);
        if (expected && S.n > 0) buf_json_num(&b, round_to((double)S.events / (double)expected, 1e5), 5);
        else buf_add(&b, "null", 4);
        errors += (uint64_t)(P.failed + P.connect_errors);
    }
    buf_printf(&b, ", \"errors\": %llu}\n", (unsigned long long)errors);
    fwrite(b.p, 1, b.n, stdout);
    fflush(stdout);
    free(b.p);
}

static void say(const char *line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------------ arguments */

static void usage(FILE *f) {
    fprintf(f,
            "usage: fastload [options]\n"
            "  --subscribe-url URL   template, {uid} replaced (default %s)\n"
            "  --push-url URL        (default %s)\n"
            "  --subscribers N       uid pool and subscriber count (default 100)\n"
            "  --sub-range A:B       open subscribers A..B-1 of the N here (default all; 0:0 none)\n"
            "  --uid-offset K        uids are K..K+N-1\n"
            "  --duration S          publishing window (default 10)\n"
            "  --rate R              pushes/s, open loop (0: no publisher unless --saturate/--sequential)\n"
            "  --saturate            keep every connection's --push-inflight slots busy for --duration\n"
            "  --sequential          one connection, the next push after each answer (paced by --rate > 0)\n"
            "  --no-publisher        subscribers only\n"
            "  --mode broadcast|unicast, --uids-per-push U, --events-per-push E, --event-type T\n"
            "  --push-conns K (default 4), --push-inflight F (default 16), --push-header 'Name: value'\n"
            "  --late-ms MS          a push sent later than this after its due time is late (default 5)\n"
            "  --sources N           source addresses 127.0.0.2.. (0: one per 20,000 subscribers)\n"
            "  --connect-concurrency C (default 500), --connect-timeout S (default 120)\n"
            "  --warmup S (default 1), --drain S (default 2), --latency-every N (default 1)\n"
            "  --control             stdin-driven (ready/start/marks/finish), see the header of fastload.c\n"
            "  --deadline UNIX_TIME  stop and report by then whatever happens\n",
            opt.subscribe_url, opt.push_url);
}

static int parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name, field) if (strcmp(a, name) == 0) { field = 1; continue; }
#define STR(name, field) if (strcmp(a, name) == 0 && v) { field = v; i++; continue; }
#define NUM(name, field) if (strcmp(a, name) == 0 && v) { char *e; field = strtod(v, &e); if (*e) goto bad; i++; continue; }
#define INT(name, field) if (strcmp(a, name) == 0 && v) { char *e; field = strtol(v, &e, 10); if (*e) goto bad; i++; continue; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); exit(0); }
        FLAG("--sequential", opt.sequential)
        FLAG("--saturate", opt.saturate)
        FLAG("--control", opt.control)
        FLAG("--no-publisher", opt.no_publisher)
        STR("--subscribe-url", opt.subscribe_url)
        STR("--push-url", opt.push_url)
        STR("--mode", opt.mode)
        STR("--event-type", opt.event_type)
        INT("--subscribers", opt.subscribers)
        INT("--uid-offset", opt.uid_offset)
        INT("--uids-per-push", opt.uids_per_push)
        INT("--events-per-push", opt.events_per_push)
        INT("--sources", opt.sources)
        INT("--connect-concurrency", opt.connect_concurrency)
        INT("--push-conns", opt.push_conns)
        INT("--push-inflight", opt.push_inflight)
        INT("--latency-every", opt.latency_every)
        NUM("--duration", opt.duration)
        NUM("--rate", opt.rate)
        NUM("--warmup", opt.warmup)
        NUM("--drain", opt.drain)
        NUM("--connect-timeout", opt.connect_timeout)
        NUM("--deadline", opt.deadline)
        NUM("--late-ms", opt.late_ms)
        NUM("--idle-wait", opt.idle_wait)
        if (strcmp(a, "--sub-range") == 0 && v) {
            if (sscanf(v, "%ld:%ld", &opt.sub_start, &opt.sub_stop) != 2) goto bad;
            i++;
            continue;
        }
        if (strcmp(a, "--push-header") == 0 && v) {
            if (opt.nheaders < 32) opt.headers[opt.nheaders++] = v;
            i++;
            continue;
        }
        fprintf(stderr, "fastload: unknown option or missing value: %s\n", a);
        usage(stderr);
        return -1;
    bad:
        fprintf(stderr, "fastload: %s: not a number: %s\n", a, v);
        return -1;
    }
    if (opt.duration <= 0 || opt.duration > 3600) { fprintf(stderr, "fastload: --duration: must be in (0, 3600]\n"); return -1; }
    if (strcmp(opt.mode, "broadcast") && strcmp(opt.mode, "unicast")) { fprintf(stderr, "fastload: --mode: broadcast or unicast\n"); return -1; }
    if (opt.subscribers < 0) { fprintf(stderr, "fastload: --subscribers: must be >= 0\n"); return -1; }
    if (opt.sub_start < 0) { opt.sub_start = 0; opt.sub_stop = opt.subscribers; }
    if (opt.sub_stop < opt.sub_start || opt.sub_stop > opt.subscribers) { fprintf(stderr, "fastload: --sub-range: must lie in 0..--subscribers\n"); return -1; }
    if (opt.push_conns < 1 || opt.push_conns > MAX_PUSH_CONNS) { fprintf(stderr, "fastload: --push-conns: 1..%d\n", MAX_PUSH_CONNS); return -1; }
    if (opt.push_inflight < 1 || opt.push_inflight > MAX_INFLIGHT) { fprintf(stderr, "fastload: --push-inflight: 1..%d\n", MAX_INFLIGHT); return -1; }
    if (opt.uids_per_push < 1 || opt.events_per_push < 1 || opt.events_per_push > 200) { fprintf(stderr, "fastload: --uids-per-push >= 1, --events-per-push in 1..200\n"); return -1; }
    if (opt.latency_every < 1) opt.latency_every = 1;
    if (opt.rate < 0) { fprintf(stderr, "fastload: --rate: must be >= 0\n"); return -1; }
    if (strlen(opt.event_type) > 64 || strpbrk(opt.event_type, "\"\\\r\n")) { fprintf(stderr, "fastload: --event-type: a short plain word\n"); return -1; }
    return 0;
}

/* ------------------------------------------------------------------ main loop */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

int main(int argc, char **argv) {
    if (parse_args(argc, argv) < 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    double t0 = mono();
    double deadline = opt.deadline > 0
                          ? t0 + (opt.deadline - realtime())
                          : t0 + opt.connect_timeout + opt.warmup + opt.duration + opt.drain + opt.idle_wait + 60;
    epfd = epoll_create1(0);
    hist_init(&S.lat);
    hist_init(&P.rtt);
    hist_init(&P.lag);
    P.rng = 0x9E3779B97F4A7C15ull;

    S.n = opt.sub_stop - opt.sub_start;
    if (S.n > 0) {
        if (parse_url(opt.subscribe_url, &S.u, "--subscribe-url") < 0) return 2;
        S.sources = (int)(opt.sources > 0 ? opt.sources : (opt.subscribers + 19999) / 20000);
        if (S.sources < 1) S.sources = 1;
        if (S.sources > 250) S.sources = 250;
        S.s = calloc((size_t)S.n, sizeof *S.s);
        for (long i = 0; i < S.n; i++) S.s[i].fd = -1;
        S.pending_heads = S.n;
    }
    int want_pub = !opt.no_publisher && (opt.rate > 0 || opt.sequential || opt.saturate);
    if (want_pub) {
        if (parse_url(opt.push_url, &P.u, "--push-url") < 0) return 2;
        P.kind = opt.sequential ? PUB_SEQUENTIAL : opt.saturate ? PUB_SATURATE : PUB_OPEN;
        if (P.kind == PUB_SEQUENTIAL) { opt.push_conns = 1; opt.push_inflight = 1; }
        buf_printf(&P.head, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n", P.u.target,
                   P.u.host, P.u.port);
        for (int i = 0; i < opt.nheaders; i++) buf_printf(&P.head, "%s\r\n", opt.headers[i]);
        buf_add(&P.head, "Content-Length: ", 16);
        long pool = opt.subscribers > 0 ? opt.subscribers : 1;
        P.perm = malloc((size_t)pool * sizeof *P.perm);
        for (long i = 0; i < pool; i++) P.perm[i] = i;
    }
    if (opt.control) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)K_STDIN << 56};
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) { fprintf(stderr, "fastload: --control needs a pipe on stdin\n"); return 2; }
    }

    enum { PH_SUBS, PH_PUBCONN, PH_READY, PH_WARMUP, PH_RUN, PH_DRAIN, PH_FINISH } phase = PH_SUBS;
    double connect_end = t0 + opt.connect_timeout, phase_end = 0;
    char cmd[256];
    size_t cmd_len = 0;
    int published_said = 0;
    struct epoll_event evs[1024];
    subs_connect_more();
    while (!stop_flag && phase != PH_FINISH) {
        double now = mono();
        if (now >= deadline) { note(&S.errs, "deadline reached"); break; }
        /* phase transitions */
        if (phase == PH_SUBS) {
            if (S.pending_heads <= 0 || now >= connect_end) {
                if (S.pending_heads > 0) {
                    note(&S.errs, "connect timeout: %ld heads still pending", S.pending_heads);
                    for (long i = 0; i < S.n; i++)
                        if (S.s[i].state != S_BODY && S.s[i].state != S_CLOSED) { S.connect_errors++; sub_close(&S.s[i], 0); }
                    S.next = S.n;
                }
                connect_seconds = now - t0;
                phase = PH_PUBCONN;
                if (want_pub) {
                    P.nconns = (int)opt.push_conns;
                    P.c = calloc((size_t)P.nconns, sizeof *P.c);
                    for (int i = 0; i < P.nconns; i++) {
                        P.c[i].idx = i;
                        P.c[i].fd = -1;
                        P.c[i].q = calloc((size_t)opt.push_inflight, sizeof(inflight));
                        pub_connect(&P.c[i]);
                    }
                }
                phase_end = now + 10.0;
            }
        }
        if (phase == PH_PUBCONN) {
            int pending = 0;
            for (int i = 0; i < P.nconns; i++)
                if (P.c[i].fd >= 0 && !P.c[i].connected) pending++;
            if (!pending || now >= phase_end) {
                int up = 0;
                for (int i = 0; i < P.nconns; i++) up += P.c[i].connected;
                if (want_pub && !up) note(&P.errs, "no push connection could be opened");
                if (opt.control) {
                    char line[256];
                    snprintf(line, sizeof line, "{\"type\": \"ready\", \"established\": %llu, \"errors\": %llu, \"push_connections\": %d}",
                             (unsigned long long)S.established, (unsigned long long)(S.connect_errors + S.http_errors), up);
                    say(line);
                    phase = PH_READY;
                } else {
                    phase = PH_WARMUP;
                    phase_end = now + opt.warmup;
                }
            }
        }
        if (phase == PH_WARMUP && now >= phase_end) {
            mark("start");
            phase = PH_RUN;
            if (want_pub) pub_activate(now);
            phase_end = now + opt.duration;
        }
        if (P.active && !P.done && P.finished && (!pushes_pending() || now >= P.finished + opt.idle_wait)) {
            P.done = 1;  /* the window is over and every answer is in (or the wait for them is) */
            if (!opt.control) { mark("stop"); phase = PH_DRAIN; phase_end = now + opt.drain; }
        }
        if (phase == PH_RUN && !want_pub && !opt.control && now >= phase_end) {
            mark("stop");
            phase = PH_DRAIN;
            phase_end = now + opt.drain;
        }
        if (opt.control && P.done && !published_said) {
            published_said = 1;
            say("{\"type\": \"published\"}");
        }
        if (phase == PH_DRAIN && now >= phase_end) { phase = PH_FINISH; break; }
        if (phase == PH_SUBS) subs_connect_more();

        /* the publisher and the timers decide how long to wait */
        double wake = deadline;
        double due = pub_pump(now);
        if (due > 0 && due < wake) wake = due;
        if (P.active && !P.done && P.finished) {  /* the window is over: done once the answers are in */
            double until = pushes_pending() ? P.finished + opt.idle_wait : now;
            if (until < wake) wake = until;
        }
        if (phase == PH_SUBS && connect_end < wake) wake = connect_end;
        /* Under --control the run ends on a command, not at phase_end (stale then: waiting for it would spin). */
        if ((phase == PH_PUBCONN || phase == PH_WARMUP || phase == PH_DRAIN ||
             (phase == PH_RUN && !want_pub && !opt.control)) &&
            phase_end < wake)
            wake = phase_end;
        for (int i = 0; i < P.nconns; i++)
            if (P.c[i].dirty) { P.c[i].dirty = 0; if (P.c[i].fd >= 0) pub_flush(&P.c[i]); }
        now = mono();
        double wait = wake - now;
        if (wait < 0) wait = 0;
        struct timespec ts = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
        int n = epoll_pwait2(epfd, evs, 1024, &ts, NULL);
        if (n < 0 && errno != EINTR) { perror("epoll_pwait2"); break; }
        for (int k = 0; k < n; k++) {
            uint64_t d = evs[k].data.u64;
            int kind = (int)(d >> 56);
            if (kind == K_SUB) {
                sub *s = &S.s[d & 0xffffffffffull];
                if (s->state == S_CLOSED) continue;
                if (s->state == S_CONNECTING) { sub_connected(s); continue; }
                if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) sub_readable(s);
            } else if (kind == K_PUB) {
                pconn *c = &P.c[d & 0xffffff];
                if ((uint32_t)((d >> 24) & 0xffffffff) != c->gen || c->fd < 0) continue;
                pub_event(c, evs[k].events);
            } else if (kind == K_STDIN) {
                for (;;) {
                    ssize_t r = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
                    if (r == 0) { phase = PH_FINISH; break; }
                    if (r < 0) break;
                    cmd_len += (size_t)r;
                    char *nl;
                    while ((nl = memchr(cmd, '\n', cmd_len))) {
                        *nl = 0;
                        char *w = cmd;
                        while (*w == ' ' || *w == '\r') w++;
                        char *e = w + strlen(w);
                        while (e > w && (e[-1] == ' ' || e[-1] == '\r')) *--e = 0;
                        if (!*w || strcmp(w, "finish") == 0) phase = PH_FINISH;
                        else {
                            mark(w);
                            if (strcmp(w, "start") == 0) {
                                phase = PH_RUN;
                                if (want_pub && !P.active) pub_activate(mono());
                            }
                        }
                        size_t used = (size_t)(nl - cmd) + 1;
                        memmove(cmd, cmd + used, cmd_len - used);
                        cmd_len -= used;
                    }
                    if (cmd_len >= sizeof cmd - 1) cmd_len = 0;
                }
            }
        }
    }
    if (!t_stop_mono) mark("stop");
    if (P.active && !P.finished) P.finished = mono();
    S.closing = 1;
    print_report(opt.control);
    return 0;
}
