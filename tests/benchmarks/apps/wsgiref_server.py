"""The standard library's wsgiref.simple_server (one thread, HTTP/1.0), quiet.

    python wsgiref_server.py PORT
"""
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchapp import app  # noqa: E402


class Server(WSGIServer):
    request_queue_size = 1024  # the other servers' backlogs are 1024 to 2048


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = make_server("127.0.0.1", int(sys.argv[1]), app, server_class=Server,
                         handler_class=QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
