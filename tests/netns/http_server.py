#!/usr/bin/env python3
"""A small threaded HTTP server for the namespace testbed (docs/testbed.md).

    http_server.py HOST PORT

GET /                              a small page; its body has `peer=IP:PORT`, the
                                   client's address as this server saw it (so a test
                                   sees what a NAT did);
GET /slow?seconds=S&chunks=N       N chunks spread over S seconds (chunked encoding),
                                   keeping the TCP connection open that long;
GET /bytes?n=N                     N bytes of `x` (bulk traffic);
any other path                     200 with `path=...` and `peer=...`.

Prints `listening HOST:PORT` on stdout once it accepts connections.
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def peer(self):
        host, port = self.client_address[:2]
        return f"peer={host}:{port}"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/slow":
            self.slow(parse_qs(url.query))
        elif url.path == "/bytes":
            self.page("x" * int(parse_qs(url.query).get("n", ["0"])[0]), "application/octet-stream")
        elif url.path == "/":
            self.page(f"<html><body><h1>estate testbed</h1>\n<p>{self.peer()}</p></body></html>\n", "text/html")
        else:
            self.page(f"path={url.path}\n{self.peer()}\n", "text/plain")

    def page(self, body, kind):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def slow(self, query):
        seconds = float(query.get("seconds", ["5"])[0])
        chunks = max(1, int(query.get("chunks", ["5"])[0]))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i in range(chunks):
            time.sleep(seconds / chunks)
            data = f"chunk {i + 1}/{chunks} {self.peer()}\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format, *args):
        pass


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: http_server.py HOST PORT")
    host, port = sys.argv[1], int(sys.argv[2])
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"listening {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
