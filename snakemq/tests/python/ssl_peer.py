#!/usr/bin/env python3
"""peer.py over snakeMQ's SSL link: the same peer, events and options, with every
listener and connector given a ``snakemq.link.SSLConfig``.

Usage: ``ssl_peer.py --ssl-cert PEM --ssl-key PEM [--ssl-ca PEM] <peer.py options>``

- ``--ssl-cert``/``--ssl-key``: this peer's certificate and key (SSLConfig's certfile and
  keyfile). A connector may omit them (``--ssl-cert ""``), as a Python client often does.
- ``--ssl-ca``: when given, ``cert_reqs=ssl.CERT_REQUIRED`` with these roots: a listener
  then requires a client certificate and a connector verifies the server's (Python's
  ``ssl.wrap_socket`` checks the chain, not the host name). Without it snakeMQ's default
  applies: ``cert_reqs=ssl.CERT_NONE``, nothing is verified.

snakeMQ 1.6 wraps sockets with ``ssl.wrap_socket`` (still present in Python 3.11).
"""

import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snakemq.link  # noqa: E402


def take(argv, name):
    """Remove ``name VALUE`` from argv and return VALUE (None when absent)."""
    if name not in argv:
        return None
    i = argv.index(name)
    value = argv[i + 1]
    del argv[i:i + 2]
    return value


def main():
    argv = sys.argv[1:]
    cert = take(argv, "--ssl-cert") or None
    key = take(argv, "--ssl-key") or None
    ca = take(argv, "--ssl-ca") or None
    config = snakemq.link.SSLConfig(
        keyfile=key, certfile=cert,
        cert_reqs=ssl.CERT_REQUIRED if ca else ssl.CERT_NONE,
        ca_certs=ca)

    add_listener = snakemq.link.Link.add_listener
    add_connector = snakemq.link.Link.add_connector

    def listener_with_ssl(self, address, ssl_config=None):
        return add_listener(self, address, ssl_config=config)

    def connector_with_ssl(self, address, reconnect_interval=None, ssl_config=None):
        return add_connector(self, address, reconnect_interval=reconnect_interval,
                             ssl_config=config)

    snakemq.link.Link.add_listener = listener_with_ssl
    snakemq.link.Link.add_connector = connector_with_ssl

    import peer
    sys.argv = [os.path.join(os.path.dirname(__file__), "peer.py")] + argv
    return peer.main()


if __name__ == "__main__":
    sys.exit(main())
