"""``bridge.middleware.Static``: serve files under a directory at a URL prefix.

What a team otherwise gets from nginx's ``location /s/ { alias DIR/; }`` or
whitenoise, with the HTTP rules of RFC 9110 done once:

* validators: a strong ``ETag`` from mtime + size, ``Last-Modified``;
  conditional requests in the order of §13.2.2 (``If-Match``,
  ``If-Unmodified-Since``, then ``If-None-Match``, which wins over
  ``If-Modified-Since``);
* a single byte range gives 206 (§14), an unsatisfiable one 416 with
  ``Content-Range: bytes */SIZE``, ``If-Range`` is honoured; **several
  ranges are answered with the whole file (200)**, which §14.2 allows and
  which saves building multipart/byteranges bodies nobody streams well;
* precompressed siblings (``app.css.br``, ``app.css.gz``) served with
  ``Content-Encoding`` and ``Vary: Accept-Encoding``;
* the file goes out through ``wsgi.file_wrapper`` so bridge's HTTP server
  uses ``os.sendfile``: memory stays flat whatever the file size.

Safety: the URL path is taken as already percent-decoded by the server
(PATH_INFO) and never decoded again, so ``%252e%252e`` is a literal name.
``.`` and ``..`` segments, empty segments (``//``, an absolute path),
backslashes and dot-files (unless ``hidden=True``) give 404, a NUL byte 400.
The file is opened by walking the path from a descriptor of the directory,
one component at a time with ``O_NOFOLLOW`` (``bridge.middleware.beneath``),
and everything after (type, size, validators, the bytes sent) comes from
that descriptor: a directory swapped for a symlink between a check and the
open cannot lead out of the tree, because there is no second lookup.
Symlinks inside the directory are followed only when they resolve inside it
without climbing above it (``..`` past the directory, an absolute target
elsewhere, a dot-file on the way: 404).  Directories are never listed.
"""
from __future__ import annotations

import os
import stat

from bridge import httputil
from bridge.middleware.beneath import open_beneath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

__all__ = ["Static"]

#: Types that must not depend on the machine's /etc/mime.types.
TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".map": "application/json",
    ".txt": "text/plain", ".svg": "image/svg+xml", ".xml": "application/xml",
    ".wasm": "application/wasm", ".woff": "font/woff", ".woff2": "font/woff2",
    ".webp": "image/webp", ".avif": "image/avif", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".ico": "image/x-icon", ".pdf": "application/pdf",
    ".webmanifest": "application/manifest+json", ".md": "text/markdown",
}

#: A file asked for by its compressed name is served as what it is.
COMPRESSED_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli",
                    "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                    "compress": "application/x-compress"}

#: Sibling suffix for each content-coding (RFC 9110 §8.4.1), in our order of preference.
SUFFIXES = {"br": b".br", "gzip": b".gz"}

ALLOW = "GET, HEAD"


class Static:
    """Serve the files under each directory of ``mounts`` at its URL prefix.

    ``mounts``: a mapping or pairs ``{"/static": "/srv/site/static"}``.  The
    prefix is matched against PATH_INFO, whole segments only (``/s`` serves
    ``/s/x`` but not ``/sx``); the longest prefix wins.  Everything under a
    prefix is answered here (404 when there is no such file); any other
    path goes to ``app`` (404 if ``app`` is None).

    ``max_age``: ``Cache-Control: public, max-age=N``; 0 (the default) gives
    ``no-cache``: caches keep the file but revalidate it each time (a cheap
    304 thanks to the ETag).  ``index``: serve ``index.html`` for a
    directory.  ``hidden``: serve dot-files too.  ``charset``: added to
    ``text/*`` and JavaScript types (None: never).  ``precompressed``: the
    codings whose sibling files are looked for.
    """

    def __init__(self, app: Optional[Callable], mounts: Any, *, max_age: int = 0,
                 index: bool = False, hidden: bool = False, charset: Optional[str] = "utf-8",
                 precompressed: Iterable[str] = ("br", "gzip"), blksize: int = 1 << 16) -> None:
        self.app = app
        pairs = mounts.items() if hasattr(mounts, "items") else mounts
        self.mounts = []
        for prefix, directory in pairs:
            root = os.path.realpath(os.fsencode(directory))
            if not os.path.isdir(root):
                raise ValueError(f"static directory {os.fsdecode(directory)!r} is not a directory")
            prefix = str(prefix)
            if not prefix.startswith("/"):
                raise ValueError(f"static prefix {prefix!r} must start with '/'")
            # PATH_INFO is "bytes as str": compare with the prefix in the same form.
            self.mounts.append((prefix.rstrip("/").encode("utf-8").decode("latin-1"), root))
        self.mounts.sort(key=lambda m: len(m[0]), reverse=True)
        if max_age < 0:
            raise ValueError(f"max_age must not be negative, got {max_age}")
        self.cache_control = f"public, max-age={max_age}" if max_age else "no-cache"
        self.index = index
        self.hidden = hidden
        self.charset = charset
        for coding in precompressed:
            if coding not in SUFFIXES:
                raise ValueError(f"no precompressed sibling known for coding {coding!r}")
        self.precompressed = tuple(precompressed)
        self.blksize = blksize

    def __call__(self, environ: dict, start_response: Callable) -> Iterable:
        path = environ.get("PATH_INFO", "")
        for prefix, root in self.mounts:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return self.serve(environ, start_response, root, path[len(prefix):])
        if self.app is None:
            return _plain(start_response, "404 Not Found")
        return self.app(environ, start_response)

    # -- resolving a URL path to a file -------------------------------------

    def serve(self, environ: dict, start_response: Callable, root: bytes, rel: str) -> Iterable:
        """Answer a request for ``rel`` (the PATH_INFO part after the prefix) under ``root``."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", [("Allow", ALLOW)])
        try:
            raw = rel.encode("latin-1")
        except UnicodeEncodeError:
            return _plain(start_response, "400 Bad Request")   # not a PEP 3333 PATH_INFO
        if b"\0" in raw:
            return _plain(start_response, "400 Bad Request")
        parts = self._segments(raw)
        if parts is None:
            return _plain(start_response, "404 Not Found")
        found = self._open(environ, root, parts)
        if found is None:
            return _plain(start_response, "404 Not Found")
        with _Descriptor(found[0]) as file:
            st = os.fstat(file.fd)
            if stat.S_ISDIR(st.st_mode):
                file.close()
                return self._directory(environ, start_response, root, raw, found[1])
            if raw.endswith(b"/"):
                return _plain(start_response, "404 Not Found")   # "file/" names no file
            return self._send(environ, start_response, root, file, st, found[1])

    def _directory(self, environ: dict, start_response: Callable, root: bytes, raw: bytes,
                   names: list) -> Iterable:
        """A directory: never a listing; with ``index``, a redirect to ``dir/`` or its index.html."""
        if not self.index:
            return _plain(start_response, "404 Not Found")
        if not raw.endswith(b"/"):
            # Relative links in the index page need the slash (as nginx does).
            location = _quote((environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")) + "/"
            if environ.get("QUERY_STRING"):
                location += "?" + environ["QUERY_STRING"]
            return _plain(start_response, "301 Moved Permanently", [("Location", location)])
        found = self._open(environ, root, names + [b"index.html"])
        if found is None:
            return _plain(start_response, "404 Not Found")
        with _Descriptor(found[0]) as file:
            return self._send(environ, start_response, root, file, os.fstat(file.fd), found[1])

    def _open(self, environ: dict, root: bytes, parts: list) -> Optional[tuple]:
        """``(fd, names)`` of ``root/parts`` opened without leaving ``root``, or None (404).

        Everything after this works on the descriptor, never on the name
        again: see ``bridge.middleware.beneath`` for why and how.
        """
        try:
            return open_beneath(root, parts, hidden=self.hidden)
        except OSError as exc:
            if isinstance(exc, PermissionError):
                name = os.fsdecode(b"/".join(parts))
                _log(environ, f"bridge static: cannot open {name!r}: {exc.strerror}")
            return None

    def _segments(self, raw: bytes) -> Optional[list]:
        """The path segments, or None when the path may not name a file here."""
        if not raw:
            return []
        if not raw.startswith(b"/") or b"\\" in raw:
            return None
        parts = raw[1:].split(b"/")
        for i, part in enumerate(parts):
            if not part:
                if i == len(parts) - 1:
                    continue       # a trailing slash: a directory
                return None        # "//": an absolute path smuggled after the prefix
            if part in (b".", b"..") or (part.startswith(b".") and not self.hidden):
                return None
        return parts

    # -- the response ---------------------------------------------------------

    def _content_type(self, basename: bytes) -> str:
        name = os.fsdecode(basename)
        ext = os.path.splitext(name)[1].lower()
        ctype = TYPES.get(ext)
        if ctype is None:
            import mimetypes
            ctype, coding = mimetypes.guess_type(name, strict=False)
            if coding is not None:
                # "x.tar.gz" is a gzip file to whoever asks for it by that name.
                ctype = COMPRESSED_TYPES.get(coding, "application/octet-stream")
            elif ctype is None:
                ctype = "application/octet-stream"
        if self.charset and (ctype.startswith("text/") or ctype in ("application/javascript", "application/xml", "image/svg+xml")):
            ctype += "; charset=" + self.charset
        return ctype

    def _variants(self, environ: dict, root: bytes, names: list) -> list:
        """``[(coding, descriptor, stat)]`` of the precompressed siblings that are regular files."""
        found = []
        for coding in self.precompressed:
            sibling = self._open(environ, root, names[:-1] + [names[-1] + SUFFIXES[coding]])
            if sibling is None:
                continue
            file = _Descriptor(sibling[0])
            st = os.fstat(file.fd)
            if stat.S_ISREG(st.st_mode):
                found.append((coding, file, st))
            else:
                file.close()
        return found

    def _send(self, environ: dict, start_response: Callable, root: bytes, file: _Descriptor,
              st: os.stat_result, names: list) -> Iterable:
        """Answer with the open ``file`` or one of its precompressed siblings."""
        headers = [("Content-Type", self._content_type(names[-1]))]
        coding = None
        variants = self._variants(environ, root, names) if self.precompressed and names else []
        try:
            if variants:
                chosen = httputil.choose_encoding(environ.get("HTTP_ACCEPT_ENCODING"), [c for c, _, _ in variants])
                for other, other_file, other_st in variants:
                    if other == chosen:
                        coding, file, st = other, other_file, other_st
                return self._respond(environ, start_response, file, st, headers, coding, True)
            return self._respond(environ, start_response, file, st, headers, None, False)
        finally:
            for _, other_file, _ in variants:
                other_file.close()

    def _respond(self, environ: dict, start_response: Callable, file: _Descriptor, st: os.stat_result,
                 headers: list, coding: Optional[str], vary: bool) -> Iterable:
        """The response for ``file`` (``st`` its fstat: of the file we send, not of a name)."""
        if not stat.S_ISREG(st.st_mode):
            return _plain(start_response, "404 Not Found")
        size = st.st_size
        mtime = int(st.st_mtime)
        etag = f'"{st.st_mtime_ns:x}-{size:x}{"-" + coding if coding else ""}"'
        validators = [("ETag", etag), ("Last-Modified", httputil.http_date(mtime)),
                      ("Cache-Control", self.cache_control)]
        if vary:
            validators.append(("Vary", "Accept-Encoding"))

        status = _preconditions(environ, etag, mtime)
        if status is not None:
            if status.startswith("304"):
                # §15.4.5: a 304 carries the validators and caching fields a 200 would.
                start_response(status, validators)
                return []
            return _plain(start_response, status)

        if coding:
            headers.append(("Content-Encoding", coding))
        headers.extend(validators)
        headers.append(("Accept-Ranges", "bytes"))
        first, length = 0, size
        status = "200 OK"
        method = environ.get("REQUEST_METHOD", "GET")
        range_header = environ.get("HTTP_RANGE")
        if range_header is not None and method == "GET" and _if_range_holds(environ.get("HTTP_IF_RANGE"), etag, mtime):
            ranges = httputil.parse_range(range_header, size)
            if ranges == []:
                return _plain(start_response, "416 Range Not Satisfiable",
                              [("Content-Range", f"bytes */{size}")])
            if ranges is not None and len(ranges) == 1:
                (first, last), = ranges
                length = last - first + 1
                status = "206 Partial Content"
                headers.append(("Content-Range", httputil.content_range(first, last, size)))
            # Several ranges: the whole file with 200 (documented choice, §14.2).
        headers.append(("Content-Length", str(length)))
        if method == "HEAD" or length == 0:
            start_response(status, headers)
            return []
        body = FileSlice(file.take(), first, length)
        try:
            start_response(status, headers)
        except BaseException:
            body.close()
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is None:
            from bridge.wsgi import FileWrapper as wrapper
        return wrapper(body, self.blksize)


def _preconditions(environ: dict, etag: str, mtime: int) -> Optional[str]:
    """RFC 9110 §13.2.2 evaluation order; the status to answer with, or None to go on."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not httputil.etag_in_list(if_match, etag, weak=False):
            return "412 Precondition Failed"      # malformed counts as no match
    else:
        since = httputil.parse_http_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        if since is not None and mtime > since:
            return "412 Precondition Failed"
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        # Weak comparison (§13.1.2); when present, If-Modified-Since is ignored.
        if httputil.etag_in_list(if_none_match, etag):
            return "304 Not Modified"
        return None
    since = httputil.parse_http_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
    if since is not None and mtime <= since:
        return "304 Not Modified"
    return None


def _if_range_holds(value: Optional[str], etag: str, mtime: int) -> bool:
    """§13.1.5: Range applies only if the If-Range validator still matches (strongly)."""
    if value is None:
        return True
    value = value.strip(" \t")
    if value.startswith('"') or value.startswith("W/"):
        return httputil.strong_match(httputil.parse_etag(value), httputil.parse_etag(etag))
    return httputil.parse_http_date(value) == mtime


class FileSlice:
    """``length`` bytes of an open file from ``first``: what a Range asks for.

    The gateway's sendfile path reads ``fileno()`` and ``tell()`` (the
    offset) and sends ``Content-Length`` bytes; the iteration path (CGI,
    other servers) calls ``read()``, which stops at the end of the slice, so
    both send exactly the range even if the file grows meanwhile.
    """

    __slots__ = ("_file", "_left")

    def __init__(self, fd: int, first: int, length: int) -> None:
        import io
        self._file = io.FileIO(fd, "rb", closefd=True)
        if first:
            self._file.seek(first)
        self._left = length

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = self._file.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


_REASONS_BODY = {"404": b"Not Found\n", "400": b"Bad Request\n", "405": b"Method Not Allowed\n",
                 "412": b"Precondition Failed\n", "416": b"Range Not Satisfiable\n",
                 "301": b"Moved Permanently\n"}


def _plain(start_response: Callable, status: str, extra: Optional[list] = None) -> list:
    body = _REASONS_BODY.get(status[:3], status[4:].encode("latin-1") + b"\n")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if extra:
        headers.extend(extra)
    start_response(status, headers)
    return [body]


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/!$&'()*+,;=:@")


def _quote(raw: bytes) -> str:
    """Percent-encode a path for ``Location`` (RFC 3986 §3.3 pchar, plus '/')."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


class _Descriptor:
    """An open descriptor closed exactly once: by ``close()``, at the end of
    the ``with`` block, or by whoever ``take()`` handed it to.  A second
    ``os.close`` of a number could close another thread's newly opened file."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def take(self) -> int:
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        fd = self.take()
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "_Descriptor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _log(environ: dict, message: str) -> None:
    errors = environ.get("wsgi.errors")
    if errors is None:
        import sys
        errors = sys.stderr
    try:
        errors.write(message + "\n")
        errors.flush()
    except Exception:
        pass
