/*
 * libzmq PUSH/PULL throughput baseline for `cargo xtask bench`.
 *
 * Usage: zmq_bench SIZE COUNT
 *
 * Two processes over tcp://127.0.0.1: the child binds a PULL socket on an ephemeral port and
 * tells the parent the endpoint through a pipe; the parent connects a PUSH socket and sends
 * COUNT messages of SIZE bytes. The clock runs in the receiver from the first message to the
 * last, so process start-up and connection set-up are not counted. The parent prints one JSON
 * line with the same fields as `snakemq bench --json`.
 *
 * The fork happens before any zmq context exists, because a context must not cross a fork.
 *
 * Build: cc -O2 bench/zmq_bench.c -lzmq -lpthread -o target/zmq_bench
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SIZE COUNT\n", argv[0]);
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
