/*
 * delayproxy: the benches' delaying TCP proxy in front of MariaDB, in C.
 *
 * Usage: delayproxy TARGET_HOST TARGET_PORT RTT_MS
 *
 * Why it exists: tests/proxy.py's TcpProxy is Python, and the CPU it takes per round trip
 * (0.06-0.09 ms measured at 1 ms) comes out of the bench machine's 2 cores, which MariaDB
 * and the workers share; the scale-out bench runs one proxy per worker. A real network
 * takes none. This program does the same with less (0.03-0.05 ms, most of it the kernel's
 * cost of the 1 ms sleep and of the wake-ups; figures in bench/common.py's DelayProcess).
 *
 * Same delay semantics as TcpProxy: in the client -> server direction it follows the
 * MySQL packets (3-byte little-endian length, 1-byte sequence id) across recv() chunks;
 * a packet with sequence id 0 starts a command (a query, COMMIT, ...; the handshake reply
 * has id 1 and the packets continuing one of 0xFFFFFF bytes have ids 1, 2, ...). When a
 * chunk just received starts at least one command, the proxy sleeps RTT_MS once, then
 * passes the chunk on. Server -> client is relayed without delay. Assumes no TLS.
 *
 * It listens on 127.0.0.1 on a free port, prints that port and a newline on stdout, and
 * serves until its stdin reaches EOF (the bench closed it, or exited), then exits 0.
 * One thread per direction per connection, blocking I/O, TCP_NODELAY on both sockets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static struct addrinfo *target;
static struct timespec delay; /* zero: no delay */

struct pair {
    int client, upstream;
    atomic_int live; /* directions still running: the last one closes and frees */
};

struct pump {
    struct pair *pair;
    int from, to;
    int framed; /* client -> server: follow the packets, delay commands */
};

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* The MySQL packet framing, across chunks (tests/proxy.py's CommandFramer). */
struct framer {
    unsigned char header[4];
    int header_len;
    size_t body_left;
};

/* Feed a chunk; returns 1 if it starts at least one command (a packet of sequence id 0). */
static int framer_feed(struct framer *f, const unsigned char *data, size_t n) {
    int started = 0;
    size_t i = 0;
    while (i < n) {
        if (f->body_left) {
            size_t step = f->body_left < n - i ? f->body_left : n - i;
            f->body_left -= step;
            i += step;
            continue;
        }
        f->header[f->header_len++] = data[i++];
        if (f->header_len == 4) {
            f->body_left = f->header[0] | f->header[1] << 8 | (size_t)f->header[2] << 16;
            if (f->header[3] == 0)
                started = 1;
            f->header_len = 0;
        }
    }
    return started;
}

static void sleep_delay(void) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += delay.tv_sec;
    until.tv_nsec += delay.tv_nsec;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

static int send_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *pump_run(void *arg) {
    struct pump *pu = arg;
    struct pair *pair = pu->pair;
    struct framer f = {0};
    int delayed = pu->framed && (delay.tv_sec || delay.tv_nsec);
    unsigned char *buf = malloc(CHUNK);
    for (;;) {
        if (!buf)
            break;
        ssize_t n = recv(pu->from, buf, CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        /* The client waits for the answer, so nothing else is due on this connection
         * meanwhile: sleeping here is the round trip. */
        if (pu->framed && framer_feed(&f, buf, (size_t)n) && delayed)
            sleep_delay();
        if (send_all(pu->to, buf, (size_t)n) < 0)
            break;
    }
    free(buf);
    free(pu);
    /* Either side closed: end both directions (wakes the other thread's recv). */
    shutdown(pair->client, SHUT_RDWR);
    shutdown(pair->upstream, SHUT_RDWR);
    if (atomic_fetch_sub(&pair->live, 1) == 1) {
        close(pair->client);
        close(pair->upstream);
        free(pair);
    }
    return NULL;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void reset(int fd) { /* close with RST, as TcpProxy does when the target is down */
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static void serve(int client, pthread_attr_t *attr) {
    int upstream = socket(target->ai_family, SOCK_STREAM, 0);
    if (upstream < 0 || connect(upstream, target->ai_addr, target->ai_addrlen) < 0) {
        if (upstream >= 0)
            close(upstream);
        reset(client);
        return;
    }
    nodelay(client);
    nodelay(upstream);
    struct pair *pair = malloc(sizeof *pair);
    struct pump *up = malloc(sizeof *up), *down = malloc(sizeof *down);
    if (!pair || !up || !down)
        die("malloc");
    pair->client = client;
    pair->upstream = upstream;
    atomic_init(&pair->live, 2);
    *up = (struct pump){pair, client, upstream, 1};
    *down = (struct pump){pair, upstream, client, 0};
    pthread_t t;
    if (pthread_create(&t, attr, pump_run, up) || pthread_create(&t, attr, pump_run, down))
        die("pthread_create");
}

static void *stdin_watch(void *arg) {
    (void)arg;
    char buf[256];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR))
            _exit(0);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TARGET_HOST TARGET_PORT RTT_MS\n", argv[0]);
        return 2;
    }
    char *end;
    double rtt_ms = strtod(argv[3], &end);
    if (*end || !(rtt_ms >= 0)) {
        fprintf(stderr, "RTT_MS must be a number >= 0\n");
        return 2;
    }
    long long ns = (long long)(rtt_ms * 1e6 + 0.5);
    delay.tv_sec = ns / 1000000000LL;
    delay.tv_nsec = ns % 1000000000LL;
    prctl(PR_SET_TIMERSLACK, 1UL); /* 1 ns: a 1 ms sleep ends close to 1 ms */
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(argv[1], argv[2], &hints, &target);
    if (rc) {
        fprintf(stderr, "%s:%s: %s\n", argv[1], argv[2], gai_strerror(rc));
        return 2;
    }

    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0)
        die("socket");
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 64) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die("listen");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, stdin_watch, NULL))
        die("pthread_create");
    for (;;) {
        int client = accept(listener, NULL, NULL);
        if (client >= 0)
            serve(client, &attr);
        else if (errno == EMFILE || errno == ENFILE)
            usleep(10000); /* out of descriptors: wait for connections to end */
        else if (errno != EINTR && errno != ECONNABORTED)
            die("accept");
    }
}
