"""Two apps to mount side by side: each answers its name, SCRIPT_NAME and PATH_INFO as JSON.

``--mount /admin=support.mount_apps:admin --mount /=support.mount_apps:public``:
a test then sees which app a request reached and with which path.
"""
import json


def _app(name):
    def app(environ, start_response):
        body = json.dumps({"app": name, "script_name": environ.get("SCRIPT_NAME", ""),
                           "path_info": environ.get("PATH_INFO", ""),
                           "request_uri": environ.get("REQUEST_URI", "")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


admin = _app("admin")
public = _app("public")
