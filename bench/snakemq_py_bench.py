#!/usr/bin/env python3
"""Python snakeMQ 1.6 throughput baseline for `cargo xtask bench`.

Usage: snakemq_py_bench.py [--persistent DIR] SIZE COUNT

Two processes over 127.0.0.1: this process listens as "bench-rx" on an ephemeral port and
starts a copy of itself as the sender "bench-tx", which connects and sends COUNT messages of
SIZE bytes. The receiver's clock runs from the first message received to the last, so
interpreter start-up and connection set-up are not counted (the same rule as the C
baselines). Prints one JSON line with the fields of `snakemq bench --json`.

The sender keeps a bounded window of messages queued and tops it up on each "message sent"
callback, so memory stays small even for 1 MiB messages.

With --persistent DIR the sender keeps its queue in a
snakemq.storage.sqlite.SqliteQueuesStorage file in DIR (created for the run, removed after it)
and every message carries FLAG_PERSISTENT and a ttl, so each one is written to SQLite when
queued and deleted from it when handed to the connection, as snakeMQ 1.6 does. The clock then
runs from the sender's first send_message() call to the receiver's last message (both read
CLOCK_MONOTONIC, which is system-wide, so the two processes' readings compare): the cost of
storing is paid before the first byte leaves, so it has to be inside the measured span. The
JSON line gains "mode":"persistent" and "storage":"sqlite".
"""

import json
import os
import socket
import subprocess
import sys
import time

import snakemq.link
import snakemq.message
import snakemq.messaging
import snakemq.packeter
import snakemq.storage.sqlite

RX_IDENT = "bench-rx"
TX_IDENT = "bench-tx"
WINDOW = 256
# Long enough never to expire during a run; a ttl is what a user of persistence would set.
PERSISTENT_TTL = 3600


def free_port():
    # The Python link has no way to report the port it bound, so ask the OS for a free one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_stack(ident, storage=None):
    link = snakemq.link.Link()
    packeter = snakemq.packeter.Packeter(link)
    messaging = snakemq.messaging.Messaging(ident, "", packeter, storage)
    return link, messaging


def remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def receive(size, count, persistent_dir=None):
    port = free_port()
    db_path = None
    if persistent_dir is not None:
        if not os.path.isdir(persistent_dir):
            sys.stderr.write("snakemq_py_bench: %s: not a directory\n" % persistent_dir)
            return 2
        db_path = os.path.join(persistent_dir, "snakemq_py_bench-%d.sqlite" % os.getpid())
        if os.path.exists(db_path):
            sys.stderr.write("snakemq_py_bench: %s already exists\n" % db_path)
            return 2
    link, messaging = make_stack(RX_IDENT)
    link.add_listener(("127.0.0.1", port))
    state = {"received": 0, "start": None, "end": None, "bad": 0}
    # The persistent run compares with the sender's time.monotonic() reading.
    clock = time.perf_counter if db_path is None else time.monotonic

    def on_recv(_conn_id, _ident, message):
        if state["start"] is None:
            state["start"] = clock()
        if len(message.data) != size:
            state["bad"] += 1
        state["received"] += 1
        if state["received"] >= count:
            state["end"] = clock()
            link.stop()

    messaging.on_message_recv.add(on_recv)
    command = [sys.executable, __file__, "--send", str(size), str(count), str(port)]
    if db_path is not None:
        command.append(db_path)
    # The persistent sender reports when it started sending on its stdout.
    sender = subprocess.Popen(
        command, stdout=subprocess.PIPE if db_path is not None else None
    )
    sender_out = b""
    try:
        # A generous cap so a broken sender cannot hang the benchmark forever.
        link.loop(runtime=600)
    finally:
        if db_path is None:
            sender.kill()
            sender.wait()
            link.cleanup()
        else:
            # Closing our side lets the sender see the disconnect, stop and close its
            # storage; only then is its database file safe to remove.
            link.cleanup()
            try:
                sender_out, _ = sender.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                sender.kill()
                sender_out, _ = sender.communicate()
            for suffix in ("", "-journal", "-wal", "-shm"):
                remove_quietly(db_path + suffix)

    if db_path is not None and state["end"] is not None:
        # The sender's first send, not our first receive, starts the clock.
        try:
            state["start"] = float(sender_out.decode().split()[0])
        except (IndexError, ValueError):
            sys.stderr.write("snakemq_py_bench: sender did not report its start time\n")
            return 2

    if state["end"] is None or state["bad"]:
        sys.stderr.write(
            "snakemq_py_bench: received %d of %d messages (%d of wrong size)\n"
            % (state["received"], count, state["bad"])
        )
        return 2
    elapsed = state["end"] - state["start"]
    rate = count / elapsed
    result = {
        "size": size,
        "count": count,
        "seconds": round(elapsed, 6),
        "msgs_per_sec": round(rate, 1),
        "mib_per_sec": round(rate * size / (1024 * 1024), 1),
    }
    if db_path is not None:
        result["mode"] = "persistent"
        result["storage"] = "sqlite"
    print(json.dumps(result, separators=(",", ":")))
    return 0


def send(size, count, port, db_path=None):
    storage = None
    if db_path is not None:
        storage = snakemq.storage.sqlite.SqliteQueuesStorage(db_path)
    link, messaging = make_stack(TX_IDENT, storage)
    link.add_connector(("127.0.0.1", port), reconnect_interval=0.1)
    payload = b"\0" * size
    state = {"queued": 0}

    def message():
        if storage is None:
            return snakemq.message.Message(payload, ttl=None)
        return snakemq.message.Message(
            payload, ttl=PERSISTENT_TTL, flags=snakemq.message.FLAG_PERSISTENT
        )

    def top_up():
        target = min(count, state["queued"] + 1)
        while state["queued"] < target:
            messaging.send_message(RX_IDENT, message())
            state["queued"] += 1

    def on_connect(_conn_id, ident):
        if ident != RX_IDENT:
            return
        if storage is not None and state["queued"] == 0:
            # Written at once (before the storage work starts) so a pipe reader gets it.
            sys.stdout.write("%.9f\n" % time.monotonic())
            sys.stdout.flush()
        for _ in range(min(WINDOW, count - state["queued"])):
            messaging.send_message(RX_IDENT, message())
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
        messaging.queues_manager.close()
    return 0


def main(argv):
    if len(argv) in (5, 6) and argv[1] == "--send":
        db_path = argv[5] if len(argv) == 6 else None
        return send(int(argv[2]), int(argv[3]), int(argv[4]), db_path)
    if len(argv) == 3:
        return receive(int(argv[1]), int(argv[2]))
    if len(argv) == 5 and argv[1] == "--persistent":
        return receive(int(argv[3]), int(argv[4]), argv[2])
    sys.stderr.write("usage: snakemq_py_bench.py [--persistent DIR] SIZE COUNT\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
