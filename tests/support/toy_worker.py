"""A tiny stdlib HTTP worker for backend tests: answers /health (with a chosen status)
and anything else with 200 and its port, so a test can tell instances apart."""

import argparse
import http.server
import signal
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--health-status", type=int, default=200)
    ap.add_argument("--ignore-sigterm", action="store_true", help="a worker that does not stop on SIGTERM")
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = args.health_status if self.path.startswith("/health") else 200
            body = f"port={args.port}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:  # keep the instance log short
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    args.port = server.server_address[1]  # --port 0: the one the system chose
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else lambda *_: sys.exit(0))
    print(f"toy worker listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
