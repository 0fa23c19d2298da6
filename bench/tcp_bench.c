/*
 * Loopback TCP bulk ceiling for `cargo xtask bench`: how fast can raw bytes move over
 * 127.0.0.1 on this machine, with no framing and no messaging layer at all.
 *
 * Usage: tcp_bench SIZE COUNT
 *
 * The parent listens on an ephemeral port; a forked child connects and writes COUNT chunks of
 * SIZE bytes; the parent reads until SIZE * COUNT bytes arrived. The clock runs in the reader
 * from the first byte to the last. Prints one JSON line with the fields of
 * `snakemq bench --json` (a "message" here is one SIZE-byte chunk).
 *
 * Build: cc -O2 bench/tcp_bench.c -o target/tcp_bench
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int writer(unsigned short port, long size, long count) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 2;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 2;
    /* Touched memory, not calloc's shared zero page, so the copy reads real cache lines. */
    char *buf = malloc((size_t)size);
    if (!buf) return 2;
    memset(buf, 0xab, (size_t)size);
    for (long i = 0; i < count; i++) {
        size_t off = 0;
        while (off < (size_t)size) {
            ssize_t n = write(fd, buf + off, (size_t)size - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return 2;
            off += (size_t)n;
        }
    }
    close(fd);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SIZE COUNT\n", argv[0]);
        return 2;
    }
    long size = strtol(argv[1], NULL, 10);
    long count = strtol(argv[2], NULL, 10);
    if (size < 1 || count < 1) {
        fprintf(stderr, "tcp_bench: SIZE and COUNT must be >= 1\n");
        return 2;
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
        perror("tcp_bench: listen");
        return 2;
    }

    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        close(lfd);
        _exit(writer(ntohs(addr.sin_port), size, count));
    }

    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        perror("tcp_bench: accept");
        return 2;
    }
    /* 64 KiB reads measured about twice as fast as 1 MiB reads here: the buffer stays in
     * cache. A ceiling should be the fastest plain reader, so use that. */
    size_t bufsize = 64 * 1024;
    char *buf = malloc(bufsize);
    if (!buf) return 2;
    unsigned long long total = (unsigned long long)size * (unsigned long long)count;
    unsigned long long got = 0;
    double start = 0.0;
    while (got < total) {
        ssize_t n = read(fd, buf, bufsize);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "tcp_bench: stream ended after %llu of %llu bytes\n", got, total);
            return 2;
        }
        if (got == 0) start = now_seconds();
        got += (unsigned long long)n;
    }
    double elapsed = now_seconds() - start;
    close(fd);
    free(buf);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || elapsed <= 0.0) {
        fprintf(stderr, "tcp_bench: writer failed\n");
        return 2;
    }
    double rate = (double)count / elapsed;
    printf("{\"size\":%ld,\"count\":%ld,\"seconds\":%.6f,\"msgs_per_sec\":%.1f,\"mib_per_sec\":%.1f}\n",
           size, count, elapsed, rate, rate * (double)size / (1024.0 * 1024.0));
    return 0;
}
