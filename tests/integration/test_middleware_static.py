"""``--static``: what curl and requests see from ``bridge http`` and from nginx → ``bridge fcgi``."""
import gzip
import hashlib
import os
import subprocess
import threading

import pytest
import requests

from support import public_tmpdir, require_binary
from support.middleware import KINDS, front_door, memory_kib, raw_request, split_response

SECRET = b"TOP-SECRET outside the static directory\n"
CSS = b"".join(b".rule-%d { color: #%06x; margin: %dpx }\n" % (i, i * 997, i % 40) for i in range(200))
BIG_MIB = 100


@pytest.fixture(scope="module")
def site():
    base = public_tmpdir("bridge-static-")
    root = base / "site"
    root.mkdir()
    (base / "secret.txt").write_bytes(SECRET)
    (root / "hello.txt").write_bytes(b"hello, static world\n")
    (root / "app.css").write_bytes(CSS)
    (root / "app.css.gz").write_bytes(gzip.compress(CSS, 9))
    (root / "random.bin").write_bytes(os.urandom(1 << 20))
    digest = hashlib.sha256()
    with open(root / "big.bin", "wb") as f:
        for _ in range(BIG_MIB):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    (root / ".env").write_bytes(SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET)
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<h1>sub index</h1>\n")
    os.symlink(base / "secret.txt", root / "secret-link.txt")
    os.symlink(base, root / "out-dir")
    for path in (root, root / "sub", root / ".git"):
        path.chmod(0o755)
    yield root, digest.hexdigest()
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="module", params=KINDS)
def door(request, site):
    root, _ = site
    front = front_door(request.param, "support.middleware_apps:app", "--static", f"/s={root}")
    yield front
    front.stop()


def get(door, path, **headers):
    return requests.get(door.url + path, headers=headers, timeout=30)


def curl(*args):
    binary = require_binary("curl")
    return subprocess.run([binary, "-sS", *args], capture_output=True, timeout=60, check=True).stdout


# -- 200 and the headers -------------------------------------------------------

def test_get_returns_the_file_with_type_length_and_validators(door, site):
    r = get(door, "/s/hello.txt")
    assert r.status_code == 200 and r.content == b"hello, static world\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["Content-Length"] == "20"
    assert r.headers["ETag"].startswith('"') and r.headers["Last-Modified"].endswith(" GMT")
    assert r.headers["Accept-Ranges"] == "bytes"


def test_binary_file_is_byte_exact(door, site):
    root, _ = site
    assert curl(door.url + "/s/random.bin") == (root / "random.bin").read_bytes()


def test_other_paths_still_reach_the_app(door):
    assert get(door, "/text").status_code == 200
    assert get(door, "/nothing-here").status_code == 404


def test_head_gives_the_get_headers_and_no_body(door):
    head = requests.head(door.url + "/s/app.css", timeout=10)
    full = get(door, "/s/app.css")
    assert head.status_code == 200 and head.content == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control"):
        assert head.headers[name] == full.headers[name]
    assert "Content-Length: %d" % len(CSS) in curl("-I", door.url + "/s/app.css").decode()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_get_405_with_allow(door, method):
    r = requests.request(method, door.url + "/s/hello.txt", data=b"x", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


# -- conditional requests ------------------------------------------------------

def test_if_none_match_gives_304_without_body(door):
    etag = get(door, "/s/hello.txt").headers["ETag"]
    r = get(door, "/s/hello.txt", **{"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    out = curl("-i", "-H", f"If-None-Match: \"other\", {etag}", door.url + "/s/hello.txt")
    assert out.startswith(b"HTTP/1.1 304")


def test_head_revalidation_gives_304_without_a_wrong_content_length(door):
    etag = get(door, "/s/hello.txt").headers["ETag"]
    r = requests.head(door.url + "/s/hello.txt", headers={"If-None-Match": etag}, timeout=10)
    assert r.status_code == 304 and r.headers.get("Content-Length") in (None, "20")


def test_if_modified_since_gives_304_and_if_none_match_wins(door):
    r = get(door, "/s/hello.txt")
    assert get(door, "/s/hello.txt", **{"If-Modified-Since": r.headers["Last-Modified"]}).status_code == 304
    both = get(door, "/s/hello.txt", **{"If-Modified-Since": r.headers["Last-Modified"],
                                        "If-None-Match": '"stale"'})
    assert both.status_code == 200 and both.content == b"hello, static world\n"


# -- ranges ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, first, last", [
    ("0-99", 0, 99), ("1000-", 1000, (1 << 20) - 1), ("-100", (1 << 20) - 100, (1 << 20) - 1),
    ("524288-655359", 524288, 655359),
])
def test_single_range_gives_206_with_the_exact_bytes(door, site, spec, first, last):
    root, _ = site
    data = (root / "random.bin").read_bytes()
    r = get(door, "/s/random.bin", Range=f"bytes={spec}")
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/{1 << 20}"
    assert r.content == data[first:last + 1]
    assert curl("-r", spec, door.url + "/s/random.bin") == data[first:last + 1]


def test_unsatisfiable_range_gives_416(door):
    r = get(door, "/s/hello.txt", Range="bytes=500-")
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */20"


def test_several_ranges_give_the_whole_file(door):
    r = get(door, "/s/hello.txt", Range="bytes=0-1,5-6")
    assert r.status_code == 200 and r.content == b"hello, static world\n"


def test_if_range_with_a_stale_etag_gives_the_whole_file(door):
    r = get(door, "/s/hello.txt", Range="bytes=0-4", **{"If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == b"hello, static world\n"
    etag = get(door, "/s/hello.txt").headers["ETag"]
    r = get(door, "/s/hello.txt", Range="bytes=0-4", **{"If-Range": etag})
    assert r.status_code == 206 and r.content == b"hello"


# -- precompressed -----------------------------------------------------------------

def test_precompressed_sibling_for_a_gzip_client(door):
    raw = requests.get(door.url + "/s/app.css", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    body = raw.raw.read()
    assert raw.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in raw.headers["Vary"]
    assert gzip.decompress(body) == CSS
    assert curl("--compressed", door.url + "/s/app.css") == CSS


def test_identity_client_gets_the_plain_file(door):
    r = requests.get(door.url + "/s/app.css", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in r.headers and r.content == CSS


# -- a 100 MiB file with flat memory -------------------------------------------------

def test_100_mib_file_is_byte_exact_and_server_memory_stays_flat(door, site):
    _, expected = site
    pid = door.bridge.pid
    get(door, "/s/hello.txt")                        # warm up: app, threads, buffers
    before = memory_kib(pid)
    peak = [before["VmRSS"]]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], memory_kib(pid)["VmRSS"])
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        digest = hashlib.sha256()
        size = 0
        with requests.get(door.url + "/s/big.bin", stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["Content-Length"] == str(BIG_MIB << 20)
            for block in r.iter_content(1 << 16):
                digest.update(block)
                size += len(block)
    finally:
        done.set()
        sampler.join()
    after = memory_kib(pid)
    growth_kib = max(peak[0], after["VmHWM"]) - before["VmHWM"]
    print(f"\n[{door.kind}] bridge RSS before {before['VmRSS']} KiB, peak {peak[0]} KiB, "
          f"after {after['VmRSS']} KiB, VmHWM {before['VmHWM']} -> {after['VmHWM']} KiB "
          f"for a {BIG_MIB} MiB file")
    assert size == BIG_MIB << 20 and digest.hexdigest() == expected
    assert growth_kib < 16 * 1024, f"bridge grew by {growth_kib} KiB serving {BIG_MIB} MiB"


# -- traversal: nothing leaves the directory ------------------------------------------

ATTEMPTS = [
    "/s/../secret.txt",
    "/s/sub/../../secret.txt",
    "/s/./../secret.txt",
    "/s/..%2fsecret.txt",
    "/s/%2e%2e/secret.txt",
    "/s/%2e%2e%2fsecret.txt",
    "/s/%2E%2E%2Fsecret.txt",
    "/s/sub/..%2f..%2fsecret.txt",
    "/s/%252e%252e/secret.txt",                  # double-encoded
    "/s/%252e%252e%252fsecret.txt",
    "/s/..%255csecret.txt",
    "/s/..%5csecret.txt",                        # encoded backslash
    "/s/%5c..%5csecret.txt",
    "/s/..\\secret.txt",                         # raw backslash
    "/s/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
    "/s//etc/passwd",                            # absolute path after the prefix
    "/s/%2fetc%2fpasswd",
    "/s/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/s/..%c0%af..%c0%afsecret.txt",             # overlong UTF-8 slash
    "/s/secret-link.txt",                        # symlink out of the directory
    "/s/out-dir/secret.txt",                     # directory symlink out of it
    "/s/.env",                                   # dot-files
    "/s/%2eenv",
    "/s/.git/config",
    "/s/hello.txt%00.png",                       # NUL
    "/s/%00../secret.txt",
    "/s/",                                       # no listing
    "/s/sub/",                                   # no index without --static-index
]


def test_every_traversal_attempt_is_refused(door):
    assert len(ATTEMPTS) >= 20
    answers = {}
    for target in ATTEMPTS:
        raw = raw_request(door.address, f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
                                        f"Connection: close\r\n\r\n".encode("latin-1"))
        code, _, body = split_response(raw)
        answers[target] = code
        assert b"TOP-SECRET" not in raw and b"root:x:0:0" not in raw, target
    refused = {t: c for t, c in answers.items() if c in (400, 404)}
    assert refused == answers, f"not refused with 400/404: { {t: c for t, c in answers.items() if c not in (400, 404)} }"
    # NUL is a bad request wherever it is caught; the rest are plain misses.
    assert answers["/s/hello.txt%00.png"] == 400


def test_a_directory_swapped_for_a_symlink_never_serves_the_outside_file(door, site):
    """Issue 21 item 3 end to end: while a thread flips ``race`` between a
    directory and a symlink to a directory outside, requests for
    ``race/f`` get the inside file or a 404, never the outside one."""
    root, _ = site
    base = root.parent
    outside = base / "race-out"
    outside.mkdir(exist_ok=True)
    (outside / "f").write_bytes(SECRET)
    race, aside = root / "race", base / "race-aside"
    race.mkdir(exist_ok=True)
    (race / "f").write_bytes(b"inside\n")
    for path in (outside, race):
        path.chmod(0o755)
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            os.rename(race, aside)
            os.symlink(outside, race)
            os.unlink(race)
            os.rename(aside, race)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen = {}
    try:
        with requests.Session() as session:
            for _ in range(1500):
                r = session.get(door.url + "/s/race/f", timeout=30)
                seen[r.status_code, r.content[:20]] = seen.get((r.status_code, r.content[:20]), 0) + 1
                if SECRET[:20] in r.content:
                    break
    finally:
        stop.set()
        swapper.join()
    print(f"\n[{door.kind}] {seen}")
    assert not any(SECRET[:20] in body for _, body in seen), seen
    assert seen.get((200, b"inside\n"), 0) > 0, seen
