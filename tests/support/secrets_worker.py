"""A stdlib HTTP worker that shows what a function instance was given as secrets:
GET /secrets answers the current bytes of $FNGATE_SECRETS_FILE, GET /accounts-secrets those
of $FNGATE_ACCOUNTS_SECRETS_FILE (404 when there is none), with its pid in `x-pid`, so a
test can see values reach it and change in place."""

import argparse
import http.server
import os
import signal
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body = 200, b"ok"
            if not self.path.startswith("/health"):
                var = "FNGATE_ACCOUNTS_SECRETS_FILE" if self.path.startswith("/accounts-secrets") else "FNGATE_SECRETS_FILE"
                path = os.environ.get(var)
                try:
                    with open(path or "", "rb") as f:
                        body = f.read()
                except OSError:
                    status, body = 404, b"no secrets file"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-pid", str(os.getpid()))
            self.send_header("x-secrets-file", os.environ.get("FNGATE_SECRETS_FILE", ""))
            self.send_header("x-accounts-secrets-file", os.environ.get("FNGATE_ACCOUNTS_SECRETS_FILE", ""))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
