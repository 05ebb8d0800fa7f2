/*
 * The floor: a single-threaded epoll SSE writer in C (built by benchmarks/fanout.py).
 *
 * Same contract as the Python peers:
 *   GET /events?uid=<uid>  -> 200 text/event-stream (body ends with the connection),
 *                             first ": heartbeat\n\n", then "id: N\nevent: E\ndata: D\n\n"
 *   POST /push {"uids":[...],"events":[{"event":"tick","data":{...}}]}
 *                          -> 200 {"code":0,"msg":"ok","data":{"ids":["N",...]}}
 * Empty "uids" is a broadcast.  "data" is copied as the raw JSON text it was sent as
 * (the benchmark publisher sends compact JSON on one line).  Frames are appended to a
 * per-connection output buffer and every dirty connection gets ONE write() per epoll
 * wake-up; a connection with more than 4 MiB pending is dropped (slow consumer).
 *
 * Usage: epoll_floor PORT [HEARTBEAT_SECONDS] [HOST]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define MAX_PENDING (4u << 20)
#define NBUCKETS 65536

typedef struct conn {
    int fd;
    int is_sub;
    int dirty;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    char uid[64];
    struct conn *next_uid;  /* chain in the uid hash table */
    int sub_index;          /* position in subs[] */
} conn;

static conn *conns[MAXFD];
static int subs[MAXFD];
static int nsubs;
static conn *buckets[NBUCKETS];
static int dirty[MAXFD];
static int ndirty;
static int epfd;
static unsigned long long seq;
static volatile sig_atomic_t stop_flag;

static const char HEARTBEAT[] = ": heartbeat\n\n";
static const char STREAM_HEAD[] =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    "connection: close\r\n\r\n";

static unsigned hash(const char *s) {
    unsigned h = 2166136261u;
    while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }
    return h % NBUCKETS;
}

static void on_stop(int sig) { (void)sig; stop_flag = 1; }

static int append(conn *c, const char *p, size_t n) {
    if (c->out_len + n > c->out_cap) {
        if (c->out_off > 0) {  /* compact before growing */
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n) cap *= 2;
            char *q = realloc(c->out, cap);
            if (!q) return -1;
            c->out = q;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    if (!c->dirty) { c->dirty = 1; dirty[ndirty++] = c->fd; }
    return 0;
}

static void close_conn(conn *c) {
    if (c->is_sub) {
        int last = subs[--nsubs];
        subs[c->sub_index] = last;
        conns[last]->sub_index = c->sub_index;
        conn **pp = &buckets[hash(c->uid)];
        while (*pp && *pp != c) pp = &(*pp)->next_uid;
        if (*pp) *pp = c->next_uid;
    }
    conns[c->fd] = NULL;
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Write what is pending; 0 = fine, -1 = closed. */
static int flush(conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) { c->out_off += (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->out_len - c->out_off > MAX_PENDING) { close_conn(c); return -1; }
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = c->fd};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (w < 0 && errno == EINTR) continue;
        close_conn(c);
        return -1;
    }
    c->out_off = c->out_len = 0;
    if (c->is_sub) {  /* an idle stream keeps no buffer */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 0;
}

/* Find the end of the JSON value starting at p (object, array, string or scalar). */
static const char *json_value_end(const char *p, const char *end) {
    int depth = 0, in_str = 0;
    const char *s = p;
    for (; s < end; s++) {
        char ch = *s;
        if (in_str) {
            if (ch == '\\') s++;
            else if (ch == '"') { in_str = 0; if (depth == 0) return s + 1; }
            continue;
        }
        if (ch == '"') in_str = 1;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') { if (depth == 0) return s; if (--depth == 0) return s + 1; }
        else if (depth == 0 && (ch == ',')) return s;
    }
    return s;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* Find "key": in [p, end) at any depth and return the position after the colon. */
static const char *find_key(const char *p, const char *end, const char *key) {
    size_t kl = strlen(key);
    for (const char *s = p; s + kl + 2 < end; s++) {
        if (*s == '"' && memcmp(s + 1, key, kl) == 0 && s[kl + 1] == '"') {
            const char *q = skip_ws(s + kl + 2, end);
            if (q < end && *q == ':') return skip_ws(q + 1, end);
        }
    }
    return NULL;
}

static void reply(conn *c, int status, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n",
                     status, status == 200 ? "OK" : (status == 400 ? "Bad Request" : "Not Found"),
                     strlen(body));
    append(c, head, (size_t)n);
    append(c, body, strlen(body));
}

static void do_push(conn *c, const char *body, size_t len) {
    const char *end = body + len;
    const char *evs = find_key(body, end, "events");
    if (!evs || *evs != '[') { reply(c, 400, "{\"code\":400,\"msg\":\"events: required\",\"data\":{}}"); return; }
    /* Build the frames. */
    static char frames[1 << 20];
    size_t flen = 0;
    static char ids[1 << 16];
    size_t ilen = 0;
    const char *p = evs + 1;
    const char *evs_end = json_value_end(evs, end);
    while (p < evs_end) {
        p = skip_ws(p, evs_end);
        if (*p != '{') break;
        const char *obj_end = json_value_end(p, evs_end);
        const char *etype = find_key(p, obj_end, "event");
        const char *data = find_key(p, obj_end, "data");
        if (!data) { reply(c, 400, "{\"code\":400,\"msg\":\"data: required\",\"data\":{}}"); return; }
        const char *data_end = json_value_end(data, obj_end);
        const char *type_s = "message";
        size_t type_n = 7;
        if (etype && *etype == '"') {
            type_s = etype + 1;
            type_n = (size_t)(json_value_end(etype, obj_end) - etype - 2);
        }
        seq++;
        if (flen + (size_t)(data_end - data) + type_n + 64 > sizeof frames) break;
        flen += (size_t)sprintf(frames + flen, "id: %llu\nevent: %.*s\ndata: ", seq, (int)type_n, type_s);
        memcpy(frames + flen, data, (size_t)(data_end - data));
        flen += (size_t)(data_end - data);
        memcpy(frames + flen, "\n\n", 2);
        flen += 2;
        if (ilen + 32 < sizeof ids) ilen += (size_t)sprintf(ids + ilen, "%s\"%llu\"", ilen ? "," : "", seq);
        p = skip_ws(obj_end, evs_end);
        if (p < evs_end && *p == ',') p++;
    }
    const char *uids = find_key(body, end, "uids");
    int broadcast = 1;
    if (uids && *uids == '[') {
        const char *uend = json_value_end(uids, end);
        const char *u = uids + 1;
        while (u < uend) {
            u = skip_ws(u, uend);
            if (*u != '"') break;
            const char *ue = json_value_end(u, uend);
            char uid[64];
            size_t un = (size_t)(ue - u - 2);
            if (un >= sizeof uid) un = sizeof uid - 1;
            memcpy(uid, u + 1, un);
            uid[un] = 0;
            broadcast = 0;
            for (conn *s = buckets[hash(uid)]; s; s = s->next_uid)
                if (strcmp(s->uid, uid) == 0) append(s, frames, flen);
            u = skip_ws(ue, uend);
            if (u < uend && *u == ',') u++;
        }
    }
    if (broadcast)
        for (int i = 0; i < nsubs; i++) append(conns[subs[i]], frames, flen);
    static char out[1 << 16];
    snprintf(out, sizeof out, "{\"code\":0,\"msg\":\"ok\",\"data\":{\"ids\":[%.*s]}}", (int)ilen, ids);
    reply(c, 200, out);
}

static void on_readable(conn *c) {
    if (c->is_sub) {  /* a subscriber sends nothing more that matters: read into scratch */
        static char scratch[65536];
        for (;;) {
            ssize_t r = read(c->fd, scratch, sizeof scratch);
            if (r > 0) continue;
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            close_conn(c);
            return;
        }
    }
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            char *q = realloc(c->in, cap);
            if (!q) { close_conn(c); return; }
            c->in = q;
            c->in_cap = cap;
        }
        ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1);
        if (r == 0) { close_conn(c); return; }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            close_conn(c);
            return;
        }
        c->in_len += (size_t)r;
    }
    for (;;) {
        c->in[c->in_len] = 0;
        char *he = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!he) return;
        size_t head_len = (size_t)(he - c->in) + 4;
        size_t clen = 0;
        char *cl = strcasestr(c->in, "\r\ncontent-length:");
        if (cl && cl < he) clen = strtoul(cl + 17, NULL, 10);
        if (c->in_len < head_len + clen) return;
        if (strncmp(c->in, "GET /events", 11) == 0) {
            char *q = strstr(c->in, "uid=");
            size_t n = 0;
            if (q && q < he) {
                q += 4;
                while (q[n] && q[n] != ' ' && q[n] != '&' && n < sizeof c->uid - 1) n++;
                memcpy(c->uid, q, n);
            }
            c->uid[n] = 0;
            c->is_sub = 1;
            c->sub_index = nsubs;
            subs[nsubs++] = c->fd;
            unsigned h = hash(c->uid);
            c->next_uid = buckets[h];
            buckets[h] = c;
            free(c->in);
            c->in = NULL;
            c->in_len = c->in_cap = 0;
            append(c, STREAM_HEAD, sizeof STREAM_HEAD - 1);
            append(c, HEARTBEAT, sizeof HEARTBEAT - 1);
            return;
        }
        if (strncmp(c->in, "POST /push", 10) == 0) do_push(c, c->in + head_len, clen);
        else reply(c, 404, "{\"code\":404,\"msg\":\"not found\",\"data\":{}}");
        memmove(c->in, c->in + head_len + clen, c->in_len - head_len - clen);
        c->in_len -= head_len + clen;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8004;
    double hb = argc > 2 ? atof(argv[2]) : 15.0;
    const char *host = argc > 3 ? argv[3] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[1024];
    double next_hb = now_s() + hb;
    while (!stop_flag) {
        int timeout = (int)((next_hb - now_s()) * 1000);
        if (timeout < 0) timeout = 0;
        int n = epoll_wait(epfd, evs, 1024, timeout);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (cfd < 0) break;
                    if (cfd >= MAXFD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *c = calloc(1, sizeof *c);
                    c->fd = cfd;
                    conns[cfd] = c;
                    struct epoll_event ev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            conn *c = conns[fd];
            if (!c) continue;
            if (evs[i].events & (EPOLLHUP | EPOLLERR)) { close_conn(c); continue; }
            if (evs[i].events & EPOLLOUT) {
                if (flush(c) == 0 && c->out_off == 0 && c->out_len == 0) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
                }
                if (!conns[fd]) continue;
            }
            if (evs[i].events & EPOLLIN) on_readable(c);
        }
        if (now_s() >= next_hb) {
            next_hb = now_s() + hb;
            for (int i = 0; i < nsubs; i++) append(conns[subs[i]], HEARTBEAT, sizeof HEARTBEAT - 1);
        }
        for (int i = 0; i < ndirty; i++) {
            conn *c = conns[dirty[i]];
            if (!c) continue;
            c->dirty = 0;
            flush(c);
        }
        ndirty = 0;
    }
    return 0;
}
