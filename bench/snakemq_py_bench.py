#!/usr/bin/env python3
"""Python snakeMQ 1.6 throughput baseline for `cargo xtask bench`.

Usage: snakemq_py_bench.py SIZE COUNT

Two processes over 127.0.0.1: this process listens as "bench-rx" on an ephemeral port and
starts a copy of itself as the sender "bench-tx", which connects and sends COUNT messages of
SIZE bytes. The receiver's clock runs from the first message received to the last, so
interpreter start-up and connection set-up are not counted (the same rule as the C
baselines). Prints one JSON line with the fields of `snakemq bench --json`.

The sender keeps a bounded window of messages queued and tops it up on each "message sent"
callback, so memory stays small even for 1 MiB messages.
"""

import json
import socket
import subprocess
import sys
import time

import snakemq.link
import snakemq.message
import snakemq.messaging
import snakemq.packeter

RX_IDENT = "bench-rx"
TX_IDENT = "bench-tx"
WINDOW = 256


def free_port():
    # The Python link has no way to report the port it bound, so ask the OS for a free one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_stack(ident):
    link = snakemq.link.Link()
    packeter = snakemq.packeter.Packeter(link)
    messaging = snakemq.messaging.Messaging(ident, "", packeter)
    return link, messaging


def receive(size, count):
    port = free_port()
    link, messaging = make_stack(RX_IDENT)
    link.add_listener(("127.0.0.1", port))
    state = {"received": 0, "start": None, "end": None, "bad": 0}

    def on_recv(_conn_id, _ident, message):
        if state["start"] is None:
            state["start"] = time.perf_counter()
        if len(message.data) != size:
            state["bad"] += 1
        state["received"] += 1
        if state["received"] >= count:
            state["end"] = time.perf_counter()
            link.stop()

    messaging.on_message_recv.add(on_recv)
    sender = subprocess.Popen(
        [sys.executable, __file__, "--send", str(size), str(count), str(port)]
    )
    try:
        # A generous cap so a broken sender cannot hang the benchmark forever.
        link.loop(runtime=600)
    finally:
        sender.kill()
        sender.wait()
        link.cleanup()

    if state["end"] is None or state["bad"]:
        sys.stderr.write(
            "snakemq_py_bench: received %d of %d messages (%d of wrong size)\n"
            % (state["received"], count, state["bad"])
        )
        return 2
    elapsed = state["end"] - state["start"]
    rate = count / elapsed
    print(
        json.dumps(
            {
                "size": size,
                "count": count,
                "seconds": round(elapsed, 6),
                "msgs_per_sec": round(rate, 1),
                "mib_per_sec": round(rate * size / (1024 * 1024), 1),
            },
            separators=(",", ":"),
        )
    )
    return 0


def send(size, count, port):
    link, messaging = make_stack(TX_IDENT)
    link.add_connector(("127.0.0.1", port), reconnect_interval=0.1)
    payload = b"\0" * size
    state = {"queued": 0}

    def top_up():
        target = min(count, state["queued"] + 1)
        while state["queued"] < target:
            messaging.send_message(
                RX_IDENT, snakemq.message.Message(payload, ttl=None)
            )
            state["queued"] += 1

    def on_connect(_conn_id, ident):
        if ident != RX_IDENT:
            return
        for _ in range(min(WINDOW, count)):
            messaging.send_message(
                RX_IDENT, snakemq.message.Message(payload, ttl=None)
            )
            state["queued"] += 1

    def on_sent(_conn_id, _ident, _uuid):
        if state["queued"] < count:
            top_up()

    def on_disconnect(_conn_id, _ident):
        # The receiver closes once it has everything; nothing more to do.
        link.stop()

    messaging.on_connect.add(on_connect)
    messaging.on_message_sent.add(on_sent)
    messaging.on_disconnect.add(on_disconnect)
    try:
        link.loop(runtime=600)
    finally:
        link.cleanup()
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "--send":
        return send(int(argv[2]), int(argv[3]), int(argv[4]))
    if len(argv) == 3:
        return receive(int(argv[1]), int(argv[2]))
    sys.stderr.write("usage: snakemq_py_bench.py SIZE COUNT\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
