/*
 * libzmq PUSH/PULL throughput baseline for `cargo xtask bench`.
 *
 * Usage: zmq_bench SIZE COUNT
 *        zmq_bench memory SIZE COUNT
 *
 * Two processes over tcp://127.0.0.1: the child binds a PULL socket on an ephemeral port and
 * tells the parent the endpoint through a pipe; the parent connects a PUSH socket and sends
 * COUNT messages of SIZE bytes. The clock runs in the receiver from the first message to the
 * last, so process start-up and connection set-up are not counted. The parent prints one JSON
 * line with the same fields as `snakemq bench --json`.
 *
 * The fork happens before any zmq context exists, because a context must not cross a fork.
 *
 * Memory mode: how many bytes of memory libzmq spends per queued message. One process, a PUSH
 * socket with SNDHWM=0 (no limit) connected to a tcp port on 127.0.0.1 that nobody listens on
 * (found by binding a plain socket to port 0 and closing it). ZMQ_IMMEDIATE is left at 0, so
 * the socket's pipe exists from zmq_connect on and every message waits in it while libzmq keeps
 * trying to reconnect. COUNT messages of SIZE bytes are sent, each with different content; the
 * source buffer is reused because zmq_send copies it into a message of its own (for SIZE above
 * libzmq's 33-byte in-line limit, a separate allocation per message). The resident set size
 * is read from /proc/self/statm just before the first send and just after the last, and the
 * line printed is {"size":..,"count":..,"bytes_per_message":(after - before) / COUNT} plus
 * the two readings.
 *
 * Build: cc -O2 bench/zmq_bench.c -lzmq -lpthread -o target/zmq_bench
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "zmq_bench: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(2);
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Child: bind, report the endpoint, receive COUNT messages, report the elapsed time. */
static int receiver(int to_parent, long size, long count) {
    void *ctx = zmq_ctx_new();
    if (!ctx) die("zmq_ctx_new");
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    if (!pull) die("zmq_socket");
    if (zmq_bind(pull, "tcp://127.0.0.1:*") != 0) die("zmq_bind");
    char endpoint[256] = {0};
    size_t len = sizeof endpoint;
    if (zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0) die("ZMQ_LAST_ENDPOINT");
    if (write_all(to_parent, endpoint, sizeof endpoint) != 0) return 2;

    zmq_msg_t msg;
    zmq_msg_init(&msg);
    double start = 0.0;
    for (long i = 0; i < count; i++) {
        int n = zmq_msg_recv(&msg, pull, 0);
        if (n < 0) die("zmq_msg_recv");
        if (n != size) {
            fprintf(stderr, "zmq_bench: got %d bytes, expected %ld\n", n, size);
            return 2;
        }
        if (i == 0) start = now_seconds();
    }
    double elapsed = now_seconds() - start;
    zmq_msg_close(&msg);
    if (write_all(to_parent, &elapsed, sizeof elapsed) != 0) return 2;
    zmq_close(pull);
    zmq_ctx_term(ctx);
    return 0;
}

/* Resident set size in bytes (second field of /proc/self/statm, in pages), or -1. */
static long resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long total = 0, resident = 0;
    int n = fscanf(f, "%ld %ld", &total, &resident);
    fclose(f);
    if (n != 2) return -1;
    return resident * sysconf(_SC_PAGESIZE);
}

/* A tcp port on 127.0.0.1 that was free a moment ago (0 on failure). */
static unsigned short unused_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    unsigned short port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

/* Memory mode: COUNT messages queued towards a peer that never comes; RSS growth per message. */
static int memory(long size, long count) {
    unsigned short port = unused_port();
    if (port == 0) {
        perror("zmq_bench: finding an unused port");
        return 2;
    }
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%u", (unsigned)port);

    void *ctx = zmq_ctx_new();
    if (!ctx) die("zmq_ctx_new");
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    if (!push) die("zmq_socket");
    int zero = 0;
    if (zmq_setsockopt(push, ZMQ_SNDHWM, &zero, sizeof zero) != 0) die("ZMQ_SNDHWM");
    /* Messages still queued at close are dropped at once instead of blocking zmq_ctx_term. */
    if (zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof zero) != 0) die("ZMQ_LINGER");
    if (zmq_connect(push, endpoint) != 0) die("zmq_connect");

    char *payload = malloc(size > 0 ? (size_t)size : 1);
    if (!payload) {
        perror("malloc");
        return 2;
    }
    memset(payload, 0xab, size > 0 ? (size_t)size : 1);

    long before = resident_bytes();
    for (long i = 0; i < count; i++) {
        /* Distinct content: the message index in the first bytes. */
        memcpy(payload, &i, (size_t)size < sizeof i ? (size_t)size : sizeof i);
        if (zmq_send(push, payload, (size_t)size, ZMQ_DONTWAIT) < 0) die("zmq_send");
    }
    long after = resident_bytes();
    if (before < 0 || after < 0) {
        fprintf(stderr, "zmq_bench: cannot read /proc/self/statm\n");
        return 2;
    }

    zmq_close(push);
    zmq_ctx_term(ctx);
    free(payload);
    printf("{\"size\":%ld,\"count\":%ld,\"bytes_per_message\":%.1f,\"rss_before\":%ld,"
           "\"rss_after\":%ld,\"mode\":\"memory\"}\n",
           size, count, (double)(after - before) / (double)count, before, after);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "memory") == 0) {
        long size = strtol(argv[2], NULL, 10);
        long count = strtol(argv[3], NULL, 10);
        if (size < 0 || count < 1) {
            fprintf(stderr, "zmq_bench: SIZE must be >= 0 and COUNT >= 1\n");
            return 2;
        }
        return memory(size, count);
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s SIZE COUNT\n       %s memory SIZE COUNT\n", argv[0], argv[0]);
        return 2;
    }
    long size = strtol(argv[1], NULL, 10);
    long count = strtol(argv[2], NULL, 10);
    if (size < 0 || count < 2) {
        fprintf(stderr, "zmq_bench: SIZE must be >= 0 and COUNT >= 2\n");
        return 2;
    }

    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        close(fds[0]);
        _exit(receiver(fds[1], size, count));
    }
    close(fds[1]);

    char endpoint[256];
    if (read_all(fds[0], endpoint, sizeof endpoint) != 0) {
        fprintf(stderr, "zmq_bench: receiver did not start\n");
        return 2;
    }
    endpoint[sizeof endpoint - 1] = 0;

    void *ctx = zmq_ctx_new();
    if (!ctx) die("zmq_ctx_new");
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    if (!push) die("zmq_socket");
    if (zmq_connect(push, endpoint) != 0) die("zmq_connect");
    char *payload = malloc(size > 0 ? (size_t)size : 1);
    if (!payload) {
        perror("malloc");
        return 2;
    }
    memset(payload, 0xab, size > 0 ? (size_t)size : 1);
    for (long i = 0; i < count; i++) {
        if (zmq_send(push, payload, (size_t)size, 0) < 0) die("zmq_send");
    }

    double elapsed = 0.0;
    int ok = read_all(fds[0], &elapsed, sizeof elapsed) == 0;
    int status = 0;
    waitpid(pid, &status, 0);
    zmq_close(push);
    zmq_ctx_term(ctx);
    free(payload);
    if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || elapsed <= 0.0) {
        fprintf(stderr, "zmq_bench: receiver failed\n");
        return 2;
    }
    double rate = (double)count / elapsed;
    printf("{\"size\":%ld,\"count\":%ld,\"seconds\":%.6f,\"msgs_per_sec\":%.1f,\"mib_per_sec\":%.1f}\n",
           size, count, elapsed, rate, rate * (double)size / (1024.0 * 1024.0));
    return 0;
}
