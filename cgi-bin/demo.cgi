#!/usr/bin/python3
"""wsgi-bridge's demo app (bridge.demo:app) as a CGI script.

Put it in a ScriptAlias directory (apache/cgi.conf) and open
/cgi-bin/demo.cgi/ : the page lists the WSGI environ of the request;
/cgi-bin/demo.cgi/echo returns a POST body, /cgi-bin/demo.cgi/stream streams.

The #! line must name a real interpreter that Apache's user (www-data) can
run: /usr/bin/python3 with PYTHONPATH set to where bridge is installed
(SetEnv PYTHONPATH in apache/cgi.conf), or the python of a virtual
environment that has bridge, e.g. #!/srv/wsgi-bridge/venv/bin/python.
Never a pyenv shim or "/usr/bin/env python3" (which finds whatever python3
comes first on Apache's PATH).

The same script serves FastCGI when started with a listening socket on fd 0
(mod_fcgid, spawn-fcgi): run() tells the two apart.
"""
from bridge import run

run("bridge.demo:app")
