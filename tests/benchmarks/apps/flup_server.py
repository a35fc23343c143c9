"""flup's FastCGI server, started the way its docs show: threaded or prefork.

    python flup_server.py threaded|prefork SOCKET_PATH COUNT

threaded: one process with flup's default thread pool, which grows one
thread per open FastCGI connection (flup ties a thread to each connection;
capped at COUNT threads it resets every connection beyond COUNT, so the cap
is not used and COUNT is ignored).  prefork: COUNT single-threaded processes.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchapp import app  # noqa: E402


def main() -> None:
    mode, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "threaded":
        from flup.server.fcgi import WSGIServer
        server = WSGIServer(app, bindAddress=path, umask=0)
    else:
        from flup.server.fcgi_fork import WSGIServer
        server = WSGIServer(app, bindAddress=path, umask=0, minSpare=count, maxSpare=count,
                            maxChildren=count)
    server.run()


if __name__ == "__main__":
    main()
