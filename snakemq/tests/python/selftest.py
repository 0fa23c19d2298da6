#!/usr/bin/env python3
"""Self-test of peer.py, Python to Python, with the real snakeMQ 1.6.

Run with the interpreter of the snakeMQ virtualenv::

    $HOME/.cache/snakemq-venv/bin/python snakemq/tests/python/selftest.py

Checks:
1. transfer: a listener on 127.0.0.1:0 and a connector, keepalive on both;
   three small messages with explicit ttl/flags/uuid and one 20 MiB message
   arrive intact, with the fields the receiver reports.
2. persistence: persistent messages queued by a peer with --sqlite while its
   destination is away survive a restart of that peer and are delivered then.
3. ttl 0: Python discards a ttl-0 message for an unconnected peer at once.
4. keepalive idle: two peers with keepalive 0.3 s stay connected through
   2 s of silence (PING/PONG answered).
5. keepalive crash: a peer that never answers PING makes Python close the
   connection, and that close crashes Python 3 (RuntimeError in
   Messaging._manage_pings); peer.py reports it as a "crash" event, exit 3.

Exits 0 when all pass; prints what failed otherwise.
"""

import json
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
BIG = 20 * 1024 * 1024


class Proc(object):
    """peer.py child with its JSON events read by a thread."""

    def __init__(self, name, args):
        self.name = name
        self.events = queue.Queue()
        self.backlog = []
        self.p = subprocess.Popen([sys.executable, PEER] + args,
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def wait_for(self, pred, timeout=30.0):
        for i, ev in enumerate(self.backlog):
            if pred(ev):
                return self.backlog.pop(i)
        deadline = time.time() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                raise AssertionError("%s: timed out; unconsumed events: %r"
                                     % (self.name, self.backlog[-10:]))
            if ev is None:
                raise AssertionError("%s: exited; unconsumed events: %r"
                                     % (self.name, self.backlog[-10:]))
            if pred(ev):
                return ev
            self.backlog.append(ev)

    def event(self, name, timeout=30.0, **fields):
        return self.wait_for(
            lambda e: e["event"] == name and
            all(e.get(k) == v for k, v in fields.items()), timeout)

    def exit_code(self, timeout=30.0):
        return self.p.wait(timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_transfer():
    small = [
        dict(data_hex="68656c6c6f", ttl=None, flags=0, uuid="11" * 16),
        dict(data_hex="", ttl=30, flags=5, uuid="22" * 16),
        dict(data_hex="ff00ff", ttl=0xfffffffe, flags=0xffffffff,
             uuid="00112233445566778899aabbccddeeff"),
    ]
    rx = Proc("rx", ["--ident", "rx", "--listen", "127.0.0.1:0",
                     "--keepalive", "1", "0.5", "--expect", "4"])
    tx = None
    try:
        port = rx.event("listening")["port"]
        tx = Proc("tx", ["--ident", "tx", "--connect", "127.0.0.1:%d" % port,
                         "--keepalive", "1", "0.5", "--send-to", "rx",
                         "--expect-sent", "4"]
                  + ["--message=" + json.dumps(m) for m in small])
        tx.event("connected", ident="rx")
        rx.event("connected", ident="tx")
        tx.send(dict(pattern_len=BIG, uuid="33" * 16))
        for m in small:
            ev = rx.event("received", uuid=m["uuid"])
            check(ev["from"] == "tx", "from: %r" % ev)
            # The sender's queue existed (peer "disconnected") for a few ms
            # before the connection: Python subtracts that and truncates,
            # so ttl 30 goes out as 29.
            if m["ttl"] is None:
                check(ev["ttl"] is None, "ttl: %r" % ev)
            else:
                check(m["ttl"] - 1 <= ev["ttl"] <= m["ttl"],
                      "ttl: %r vs %r" % (ev["ttl"], m["ttl"]))
            check(ev["flags"] == m["flags"], "flags: %r" % ev)
            check(ev["data_hex"] == m["data_hex"], "data: %r" % ev)
            check(ev["len"] == len(m["data_hex"]) // 2, "len: %r" % ev)
        ev = rx.event("received", uuid="33" * 16, timeout=60)
        check(ev["len"] == BIG and ev["pattern_ok"], "big: %r" % ev)
        check("data_hex" not in ev, "big message echoed inline")
        check(ev["ttl"] is None, "default ttl should be infinite: %r" % ev)
        check(rx.exit_code() == 0, "rx exit code")
        check(tx.exit_code() == 0, "tx exit code")
    finally:
        rx.kill()
        if tx:
            tx.kill()


def test_persistence():
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "queue.db")
        # No listener for "rx" yet: the messages wait in the sqlite queue.
        a = Proc("a1", ["--ident", "a", "--sqlite", db, "--send-to", "rx"])
        try:
            for i in range(3):
                a.send(dict(data_hex="%02x" % i, ttl=None, flags=1,
                            uuid=("%02x" % (0x40 + i)) * 16))
                check(a.event("queued")["queued"], "not queued")
            a.send({"cmd": "stop"})
            check(a.exit_code() == 0, "a1 exit code")
        finally:
            a.kill()
        rx = Proc("rx", ["--ident", "rx", "--listen", "127.0.0.1:0",
                         "--expect", "3"])
        a = None
        try:
            port = rx.event("listening")["port"]
            a = Proc("a2", ["--ident", "a", "--sqlite", db,
                            "--connect", "127.0.0.1:%d" % port,
                            "--expect-sent", "3"])
            for i in range(3):
                ev = rx.event("received")
                check(ev["uuid"] == ("%02x" % (0x40 + i)) * 16,
                      "order/uuid: %r" % ev)
                check(ev["flags"] == 1 and ev["ttl"] is None, "fields: %r" % ev)
            check(rx.exit_code() == 0, "rx exit code")
            check(a.exit_code() == 0, "a2 exit code")
        finally:
            rx.kill()
            if a:
                a.kill()


def test_ttl_zero_discarded():
    a = Proc("a", ["--ident", "a", "--send-to", "nobody"])
    try:
        a.send(dict(data_hex="00", ttl=0))
        ev = a.event("queued")
        check(ev["queued"] is False and ev["queue_len"] == 0, "ttl 0: %r" % ev)
        a.send({"cmd": "stop"})
        check(a.exit_code() == 0, "exit code")
    finally:
        a.kill()


def test_keepalive_idle():
    rx = Proc("rx", ["--ident", "rx", "--listen", "127.0.0.1:0",
                     "--keepalive", "0.3", "0.5", "--run", "2"])
    tx = None
    try:
        port = rx.event("listening")["port"]
        tx = Proc("tx", ["--ident", "tx", "--connect", "127.0.0.1:%d" % port,
                         "--keepalive", "0.3", "0.5", "--run", "2.5"])
        rx.event("connected", ident="tx")
        # The first event after "connected" must be the shutdown at --run's
        # end, not a disconnect caused by an unanswered PING.
        ev = rx.wait_for(lambda e: e["event"] in ("disconnected", "stopping"))
        check(ev["event"] == "stopping" and ev["code"] == 0, "rx: %r" % ev)
        check(rx.exit_code() == 0, "rx exit code")
        check(tx.exit_code() == 0, "tx exit code")
    finally:
        rx.kill()
        if tx:
            tx.kill()


def test_keepalive_crash():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    py = Proc("py", ["--ident", "py", "--keepalive", "0.3", "0.5",
                     "--connect", "127.0.0.1:%d" % srv.getsockname()[1]])
    try:
        conn, _ = srv.accept()

        def packet(body):
            return struct.pack("!I", len(body)) + body

        # Version 1 and identification "mute", then silence: no PONG ever.
        conn.sendall(packet(b"\x00\x00\x00\x00\x01") + packet(b"\x02mute"))
        py.event("connected", ident="mute")
        ev = py.event("crash", timeout=10)
        check("dictionary changed size" in ev["error"], "crash: %r" % ev)
        check(py.exit_code() == 3, "exit code")
        conn.close()
    finally:
        srv.close()
        py.kill()


def main():
    failed = 0
    for test in (test_transfer, test_persistence, test_ttl_zero_discarded,
                 test_keepalive_idle, test_keepalive_crash):
        start = time.time()
        try:
            test()
            print("ok   %s (%.1fs)" % (test.__name__, time.time() - start))
        except Exception as exc:
            failed += 1
            print("FAIL %s: %s" % (test.__name__, exc))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
