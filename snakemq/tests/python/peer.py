#!/usr/bin/env python3
"""A Python snakeMQ 1.6 peer driven from the command line, for interop tests.

It runs the real ``snakemq`` package (Link, Packeter, Messaging, and optionally
a queue storage) and reports what happens as JSON lines on stdout, one object
per line, flushed at once. The Rust test helper (``tests/common/python.rs``)
spawns it and reads those lines.

Usage (every option may be combined)::

    peer.py --ident py [--listen HOST:PORT]... [--connect HOST:PORT]...
            [--reconnect-interval SECONDS]
            [--keepalive INTERVAL WAIT]
            [--sqlite PATH | --memory-storage]
            [--send-to IDENT] [--message JSON]...
            [--expect N] [--expect-sent N] [--run SECONDS]
            [--timeout SECONDS] [--linger SECONDS] [--log-level LEVEL]

Messages (``--message`` arguments, and lines on stdin) are JSON objects::

    {"data_b64": "...", "ttl": 10, "flags": 1, "uuid": "<32 hex digits>", "to": "rust"}

- data: exactly one of ``data_b64``, ``data_hex``, ``pattern_len`` (N bytes
  where byte i is ``i % 251``; cheap to build on both sides for big messages).
- ``ttl``: seconds (int or float) or null for no expiry. When the key is
  absent this script uses null, NOT Python's default of 0 (see "TTL" below).
- ``flags``: 32-bit integer, default 0. Bit 0 (1) is FLAG_PERSISTENT: only
  such messages are written to the storage given by ``--sqlite``.
- ``uuid``: 32 hex digits (16 bytes); absent means a random UUID v4.
- ``to``: the destination identity; defaults to ``--send-to``.
- ``tag``: any JSON value, echoed in the ``queued`` event (to pair them up).

Other stdin lines are commands: ``{"cmd": "stop"}`` (exit 0 after a graceful
close), ``{"cmd": "disconnect"}`` (close every connection now; connectors
reconnect after the reconnect interval), ``{"cmd": "queues"}`` (report queue
lengths). End of stdin is not a command: the peer keeps running.

Events on stdout (``conn`` is Python's connection id, e.g. ``"1fd7"``)::

    {"event": "listening", "host": "127.0.0.1", "port": 40123}
    {"event": "ready", "ident": "py"}           # set up done, stdin is read
    {"event": "connected", "ident": "rust", "conn": "1fd7"}
    {"event": "disconnected", "ident": "rust", "conn": "1fd7"}
    {"event": "queued", "to": "rust", "uuid": "<hex>", "queued": true, "queue_len": 1,
     "tag": null}
    {"event": "sent", "to": "rust", "uuid": "<hex>", "conn": "1fd7"}
    {"event": "received", "from": "rust", "conn": "1fd7", "uuid": "<hex>",
     "ttl": 29 | null, "flags": 0, "len": 5, "sha256": "<hex>",
     "pattern_ok": false, "data_b64": "...", "data_hex": "..."}
    {"event": "dropped", "to": "rust", "uuid": "<hex>"}   # TTL expired in queue
    {"event": "error", "conn": "1fd7", "error": "SnakeMQBrokenMessage(...)"}
    {"event": "queues", "queues": {"rust": 2}}
    {"event": "crash", "error": "...", "traceback": "..."}
    {"event": "timeout"}
    {"event": "stopping", "code": 0, "reason": "..."}  # own close follows
    {"event": "exit", "code": 0, "reason": "expectations met"}

``received`` carries ``data_b64``/``data_hex`` only for messages of at most
64 KiB; ``len``, ``sha256`` and ``pattern_ok`` always. ``sent`` means Python
wrote the whole packet into the socket (its ``on_message_sent``); it is not
a delivery confirmation. ``queued: false`` means Python discarded the message
silently at ``send_message`` (TTL <= 0 while the peer is not connected).

Exit codes: 0 = expectations met, ``--run`` elapsed or ``stop`` command;
1 = ``--timeout`` elapsed first; 2 = bad arguments or input; 3 = an exception
escaped the snakeMQ loop (a Python crash, reported as a ``crash`` event).

Facts of snakeMQ 1.6 that matter here (read from its source):

- Keepalive is off by default. It lives on Messaging:
  ``messaging.keepalive_interval`` (seconds of silence before a PING, None =
  off) and ``messaging.keepalive_wait`` (seconds to wait for the PONG, default
  0.5). Any received packet counts as a sign of life. When the wait elapses,
  Python closes the connection from inside a loop over a dict that the close
  modifies: under Python 3 that raises RuntimeError out of ``link.loop``,
  i.e. the Python peer crashes (exit code 3 here).
- TTL: ``Message(data, ttl=0, flags=0, uuid=None)``; ttl None = infinite
  (0xFFFFFFFF on the wire). ``send_message`` silently discards a message with
  ttl <= 0 when the peer is not connected. A queued message's ttl decreases
  only by time spent disconnected (applied when the peer connects; expired
  ones are dropped with ``on_message_drop``); time the process is down is not
  counted. On the wire goes ``int(remaining ttl)``. Received ttl is handed to
  the application as a float (None for infinite).
- A message leaves the queue (and the storage) when it is handed to the
  packeter, before it is written: bytes still buffered when the connection
  drops are lost (at-most-once).
"""

import argparse
import base64
import binascii
import hashlib
import json
import logging
import queue
import select
import socket
import sys
import threading
import time
import traceback

try:
    import snakemq.link
    import snakemq.messaging
    import snakemq.packeter
    from snakemq.message import Message
    from snakemq.storage import MemoryQueuesStorage
    from snakemq.storage.sqlite import SqliteQueuesStorage
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stdout.write(json.dumps({"event": "crash",
                                 "error": "cannot import snakemq: %r" % exc,
                                 "traceback": ""}) + "\n")
    sys.stdout.flush()
    sys.exit(3)

# Messages up to this size are echoed in full in "received" events.
INLINE_DATA_LIMIT = 64 * 1024

EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_CRASH = 3

_emit_lock = threading.Lock()


def emit(event, **fields):
    """Write one JSON event line; the lock keeps lines whole across threads."""
    obj = {"event": event}
    obj.update(fields)
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def pattern(length):
    """Deterministic test data: byte i is i % 251 (251 is prime, so the
    pattern never lines up with power-of-two chunk boundaries)."""
    block = bytes(range(251))
    return (block * (length // 251 + 1))[:length]


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    try:
        return (host, int(port))
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in %r" % text)


def build_message(spec, default_to):
    """Turn a JSON message spec into (destination, snakemq Message)."""
    sources = [k for k in ("data_b64", "data_hex", "pattern_len") if k in spec]
    if len(sources) != 1:
        raise ValueError("give exactly one of data_b64, data_hex, pattern_len")
    if "data_b64" in spec:
        data = base64.b64decode(spec["data_b64"], validate=True)
    elif "data_hex" in spec:
        data = binascii.unhexlify(spec["data_hex"])
    else:
        data = pattern(int(spec["pattern_len"]))
    ttl = spec.get("ttl", None)
    flags = int(spec.get("flags", 0))
    uuid = spec.get("uuid")
    if uuid is not None:
        uuid = binascii.unhexlify(uuid)
        if len(uuid) != 16:
            raise ValueError("uuid must be 16 bytes (32 hex digits)")
    to = spec.get("to", default_to)
    if not to:
        raise ValueError("no destination: give \"to\" or --send-to")
    return to, Message(data, ttl=ttl, flags=flags, uuid=uuid)


def ttl_to_json(ttl):
    if ttl is None:
        return None
    return int(ttl) if float(ttl).is_integer() else ttl


class Peer(object):
    def __init__(self, args):
        self.args = args
        self.commands = queue.Queue()
        self.received = 0
        self.sent = 0
        self.exit_code = None
        self.exit_reason = None
        self.start = time.time()

        if args.sqlite:
            storage = SqliteQueuesStorage(args.sqlite)
        elif args.memory_storage:
            storage = MemoryQueuesStorage()
        else:
            storage = None

        self.link = snakemq.link.Link()
        self.packeter = snakemq.packeter.Packeter(self.link)
        self.messaging = snakemq.messaging.Messaging(args.ident, "",
                                                     self.packeter, storage)
        if args.keepalive:
            self.messaging.keepalive_interval = args.keepalive[0]
            self.messaging.keepalive_wait = args.keepalive[1]

        m = self.messaging
        m.on_connect.add(self.on_connect)
        m.on_disconnect.add(self.on_disconnect)
        m.on_message_recv.add(self.on_message_recv)
        m.on_message_sent.add(self.on_message_sent)
        m.on_message_drop.add(self.on_message_drop)
        m.on_error.add(self.on_error)
        # Registered after Messaging's own handler, so queued messages have
        # been handed to the packeter before the exit conditions are checked.
        self.link.on_loop_pass.add(self.on_loop_pass)

        for addr in args.listen:
            bound = self.link.add_listener(addr)
            emit("listening", host=bound[0], port=bound[1])
        for addr in args.connect:
            self.link.add_connector(addr,
                                    reconnect_interval=args.reconnect_interval)

    # -- snakeMQ callbacks -------------------------------------------------

    def on_connect(self, conn_id, ident):
        emit("connected", ident=ident, conn=conn_id)

    def on_disconnect(self, conn_id, ident):
        emit("disconnected", ident=ident, conn=conn_id)

    def on_message_recv(self, conn_id, ident, message):
        self.received += 1
        data = message.data
        fields = dict(conn=conn_id, uuid=binascii.hexlify(message.uuid).decode(),
                      ttl=ttl_to_json(message.ttl), flags=message.flags,
                      len=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      pattern_ok=(data == pattern(len(data))))
        fields["from"] = ident
        if len(data) <= INLINE_DATA_LIMIT:
            fields["data_b64"] = base64.b64encode(data).decode()
            fields["data_hex"] = binascii.hexlify(data).decode()
        emit("received", **fields)

    def on_message_sent(self, conn_id, ident, message_uuid):
        self.sent += 1
        emit("sent", to=ident, conn=conn_id,
             uuid=binascii.hexlify(message_uuid).decode())

    def on_message_drop(self, ident, message_uuid):
        emit("dropped", to=ident, uuid=binascii.hexlify(message_uuid).decode())

    def on_error(self, conn_id, exc):
        emit("error", conn=conn_id, error=repr(exc))

    # -- commands ----------------------------------------------------------

    def stdin_reader(self):
        """Runs in its own thread; the Link is not thread-safe, so lines are
        handed to the loop thread through a queue plus a poll wake-up."""
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            self.commands.put(line)
            try:
                self.link.wakeup_poll()
            except OSError:
                return  # the loop is gone

    def run_command(self, line):
        try:
            spec = json.loads(line) if isinstance(line, str) else line
            if not isinstance(spec, dict):
                raise ValueError("expected a JSON object")
            cmd = spec.get("cmd", "send")
            if cmd == "send":
                self.send(spec)
            elif cmd == "stop":
                self.finish(EXIT_OK, "stop command")
            elif cmd == "disconnect":
                for conn_id in list(self.link._sock_by_conn.keys()):
                    self.link.close(conn_id)
            elif cmd == "queues":
                self.report_queues()
            else:
                raise ValueError("unknown cmd %r" % cmd)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            emit("bad_input", error=repr(exc))
            self.finish(EXIT_USAGE, "bad input: %r" % exc)

    def send(self, spec):
        to, message = build_message(spec, self.args.send_to)
        q = self.messaging.queues_manager.get_queue(to)
        before = len(q)
        self.messaging.send_message(to, message)
        emit("queued", to=to, uuid=binascii.hexlify(message.uuid).decode(),
             queued=len(q) > before, queue_len=len(q), tag=spec.get("tag"))

    def report_queues(self):
        qm = self.messaging.queues_manager
        emit("queues", queues=dict((name, len(q)) for name, q in qm.queues.items()))

    # -- loop --------------------------------------------------------------

    def finish(self, code, reason):
        if self.exit_code is None:
            self.exit_code = code
            self.exit_reason = reason
        self.link.stop()

    def expectations(self):
        """True when every given --expect* target is reached (and at least
        one was given)."""
        a = self.args
        if a.expect is None and a.expect_sent is None:
            return False
        return ((a.expect is None or self.received >= a.expect) and
                (a.expect_sent is None or self.sent >= a.expect_sent))

    def on_loop_pass(self):
        while True:
            try:
                line = self.commands.get_nowait()
            except queue.Empty:
                break
            self.run_command(line)
        if self.exit_code is not None:
            return
        elapsed = time.time() - self.start
        if self.expectations():
            self.finish(EXIT_OK, "expectations met")
        elif self.args.run is not None and elapsed >= self.args.run:
            self.finish(EXIT_OK, "run time elapsed")
        elif elapsed >= self.args.timeout:
            emit("timeout", received=self.received, sent=self.sent)
            self.finish(EXIT_TIMEOUT, "timeout")

    def graceful_close(self):
        """Half-close every connection and wait (up to --linger) for the peer
        to close its side, so that everything written is read by the peer
        before our socket goes away (a close with unread input sends RST,
        which can destroy data still in flight)."""
        socks = []
        for lsock in list(self.link._sock_by_conn.values()):
            try:
                lsock.sock.shutdown(socket.SHUT_WR)
                socks.append(lsock.sock)
            except OSError:
                pass
        deadline = time.time() + self.args.linger
        while socks:
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            readable, _, _ = select.select(socks, [], [], remaining)
            for s in readable:
                try:
                    chunk = s.recv(256 * 1024)
                except OSError:
                    chunk = b""
                if not chunk:
                    socks.remove(s)

    def run(self):
        for spec in self.args.message:
            self.run_command(spec)
        emit("ready", ident=self.messaging.identifier)
        threading.Thread(target=self.stdin_reader, daemon=True).start()
        try:
            if self.exit_code is None:
                self.link.loop()
            if self.exit_code is None:
                self.finish(EXIT_TIMEOUT, "loop ended")
            # Disconnections after this line are our own shutdown.
            emit("stopping", code=self.exit_code, reason=self.exit_reason)
            self.graceful_close()
            self.link.cleanup()
            self.messaging.queues_manager.close()
        except Exception as exc:  # a crash of snakeMQ (or of this script)
            emit("crash", error=repr(exc), traceback=traceback.format_exc())
            self.exit_code = EXIT_CRASH
            self.exit_reason = "crash"
        emit("exit", code=self.exit_code, reason=self.exit_reason,
             received=self.received, sent=self.sent)
        return self.exit_code


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ident", required=True)
    p.add_argument("--listen", action="append", default=[], type=parse_addr,
                   metavar="HOST:PORT")
    p.add_argument("--connect", action="append", default=[], type=parse_addr,
                   metavar="HOST:PORT")
    p.add_argument("--reconnect-interval", type=float, default=None,
                   help="connector retry interval in seconds (snakeMQ: 3.0)")
    p.add_argument("--keepalive", nargs=2, type=float,
                   metavar=("INTERVAL", "WAIT"))
    p.add_argument("--sqlite", metavar="PATH",
                   help="SqliteQueuesStorage file (persistent queues)")
    p.add_argument("--memory-storage", action="store_true",
                   help="MemoryQueuesStorage (not persistent)")
    p.add_argument("--send-to", metavar="IDENT")
    p.add_argument("--message", action="append", default=[], metavar="JSON")
    p.add_argument("--expect", type=int, help="exit 0 after N received")
    p.add_argument("--expect-sent", type=int, help="exit 0 after N sent")
    p.add_argument("--run", type=float, help="exit 0 after SECONDS")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="exit 1 after SECONDS (default 30)")
    p.add_argument("--linger", type=float, default=2.0,
                   help="max seconds of graceful close at exit (default 2)")
    p.add_argument("--log-level", default="WARNING",
                   help="snakeMQ logging level on stderr")
    args = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        peer = Peer(args)
    except Exception as exc:  # e.g. a listener address already in use
        emit("crash", error=repr(exc), traceback=traceback.format_exc())
        emit("exit", code=EXIT_CRASH, reason="set-up failed", received=0, sent=0)
        return EXIT_CRASH
    return peer.run()


if __name__ == "__main__":
    sys.exit(main())
