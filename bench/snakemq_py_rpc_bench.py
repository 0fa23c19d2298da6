#!/usr/bin/env python3
"""Python snakeMQ 1.6 RPC baseline for the typed-RPC benchmark (rpc-bench).

Usage: snakemq_py_rpc_bench.py CALLS [IN_FLIGHT]

Two processes over 127.0.0.1: this process listens as "rpc-bench-server" on an ephemeral
port and serves an object "echo" with snakemq.rpc.RpcServer; it starts a copy of itself as
the client "rpc-bench-client", which calls echo(64 bytes) CALLS times through
snakemq.rpc.RpcClient and prints one JSON line with the fields of `rpc-bench`.

snakeMQ's RPC calls block the calling thread, so IN_FLIGHT (default 1) calls are kept
outstanding by that many calling threads; with 1 the line's mode is "latency", otherwise
"throughput". A short warm-up runs before the clock starts, so interpreter start-up and
connection set-up are not counted.
"""

import json
import socket
import subprocess
import sys
import threading
import time

import snakemq.link
import snakemq.messaging
import snakemq.packeter
import snakemq.rpc

SERVER_IDENT = "rpc-bench-server"
CLIENT_IDENT = "rpc-bench-client"
PAYLOAD = b"\x5a" * 64
WARM_UP = 200
# A generous cap so a broken peer cannot hang the benchmark forever.
RUNTIME = 600


class Echo:
    def echo(self, data):
        return data


def free_port():
    # The Python link has no way to report the port it bound, so ask the OS for a free one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_stack(ident):
    link = snakemq.link.Link()
    packeter = snakemq.packeter.Packeter(link)
    messaging = snakemq.messaging.Messaging(ident, "", packeter)
    hook = snakemq.messaging.ReceiveHook(messaging)
    return link, messaging, hook


def serve(calls, in_flight):
    port = free_port()
    link, messaging, hook = make_stack(SERVER_IDENT)
    server = snakemq.rpc.RpcServer(hook)
    server.register_object(Echo(), "echo")
    link.add_listener(("127.0.0.1", port))
    # The client disconnects when it is done; that ends the serving loop.
    messaging.on_disconnect.add(lambda _conn_id, _ident: link.stop())
    client = subprocess.Popen(
        [sys.executable, __file__, "--call", str(calls), str(in_flight), str(port)]
    )
    try:
        link.loop(runtime=RUNTIME)
    finally:
        link.cleanup()
        try:
            return client.wait(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
            return 2


def percentile(sorted_samples, p):
    # Nearest rank, as rpc-bench computes it.
    if not sorted_samples:
        return 0.0
    rank = max(1, -(-len(sorted_samples) * p // 100))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def call(calls, in_flight, port):
    link, messaging, hook = make_stack(CLIENT_IDENT)
    client = snakemq.rpc.RpcClient(hook)
    connected = threading.Event()
    messaging.on_connect.add(lambda _conn_id, ident: connected.set())
    link.add_connector(("127.0.0.1", port), reconnect_interval=0.1)
    loop = threading.Thread(target=link.loop, kwargs={"runtime": RUNTIME}, daemon=True)
    loop.start()
    if not connected.wait(30):
        sys.stderr.write("snakemq_py_rpc_bench: no connection to the server\n")
        return 2
    proxy = client.get_proxy(SERVER_IDENT, "echo")
    proxy.echo.set_timeout(30)

    def run(count, samples):
        for _ in range(count):
            start = time.perf_counter()
            reply = proxy.echo(PAYLOAD)
            samples.append(time.perf_counter() - start)
            if reply != PAYLOAD:
                raise ValueError("echo returned %r" % (reply,))

    run(min(WARM_UP, calls), [])
    samples = [[] for _ in range(in_flight)]
    shares = [calls // in_flight + (1 if i < calls % in_flight else 0) for i in range(in_flight)]
    threads = [
        threading.Thread(target=run, args=(share, out)) for share, out in zip(shares, samples)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    link.stop()
    loop.join(10)
    link.cleanup()
    done = sorted(s for part in samples for s in part)
    if len(done) != calls:
        sys.stderr.write("snakemq_py_rpc_bench: %d of %d calls done\n" % (len(done), calls))
        return 2
    print(json.dumps({
        "harness": "snakemq-py-rpc",
        "mode": "latency" if in_flight == 1 else "throughput",
        "calls": calls,
        "seconds": round(elapsed, 6),
        "calls_per_sec": round(calls / elapsed, 1),
        "p50_us": round(percentile(done, 50) * 1e6, 1),
        "p99_us": round(percentile(done, 99) * 1e6, 1),
    }, separators=(",", ":")), flush=True)
    return 0


def main(argv):
    try:
        if argv[:1] == ["--call"]:
            return call(int(argv[1]), int(argv[2]), int(argv[3]))
        calls = int(argv[0])
        in_flight = int(argv[1]) if len(argv) > 1 else 1
    except (IndexError, ValueError):
        sys.stderr.write(__doc__)
        return 2
    if calls < 1 or in_flight < 1:
        sys.stderr.write("snakemq_py_rpc_bench: CALLS and IN_FLIGHT must be at least 1\n")
        return 2
    return serve(calls, in_flight)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
