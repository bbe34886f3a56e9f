#!/usr/bin/env python3
"""A small, fast local HTTP sink for the benchmarks.

Accepts POSTs on any path, reads the body and answers 200 ``{}`` (a 2xx that confirms
every record). HTTP/1.1 keep-alive, one thread per connection. Prints its port on the
first line of stdout. ``GET /stats`` answers {"requests": n, "bytes": n} since start or
the last ``GET /stats?reset=1``.

    sink.py [--port 0]
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {"requests": 0, "bytes": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stalls

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        with LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += len(body)
        self.reply(b"{}")

    def do_GET(self):
        with LOCK:
            out = json.dumps(STATS).encode()
            if "reset=1" in self.path:
                STATS["requests"] = STATS["bytes"] = 0
        self.reply(out)

    def reply(self, body):
        # Status line, headers and body in a single write (one segment per answer).
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
