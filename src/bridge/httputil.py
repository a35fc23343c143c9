"""Response rules shared by the middleware and the gateways (RFC 9110).

Parsing ``Accept-Encoding``, entity-tags, ``Range`` and header lists is
written once, here, each rule next to the ABNF it implements, so no gateway
or middleware grows its own almost-right copy.  The grammar they build on
(tokens, hop-by-hop names, field values, HTTP dates) is :mod:`bridge.abnf`;
:func:`http_date` and :func:`parse_http_date` are that module's, named here
too for the middleware.  Everything is a pure function of strings (WSGI
"bytes as str" values): no I/O.

Header lists are PEP 3333 lists of ``(name, value)`` str pairs.
"""
from __future__ import annotations

from bridge.abnf import http_date, parse_http_date

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional, Sequence

__all__ = [
    "get_header", "get_all", "remove_headers", "set_header", "split_list", "has_directive",
    "add_vary", "parse_accept_encoding", "accepts_encoding", "choose_encoding",
    "http_date", "parse_http_date", "parse_etag", "parse_etag_list", "etag_in_list",
    "strong_match", "weak_match", "make_weak", "ANY", "parse_range", "content_range",
]

# --------------------------------------------------------------------------
# Header lists


def get_header(headers: Iterable, name: str) -> Optional[str]:
    """The first value of field ``name`` (case-insensitive), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def get_all(headers: Iterable, name: str) -> list:
    """Every value of field ``name``, in order."""
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def remove_headers(headers: list, *names: str) -> list:
    """Remove every field named in ``names`` from ``headers`` (in place); returns it."""
    drop = {n.lower() for n in names}
    headers[:] = [(k, v) for k, v in headers if k.lower() not in drop]
    return headers


def set_header(headers: list, name: str, value: str) -> list:
    """Replace every ``name`` field with one ``name: value`` (in place); returns it."""
    remove_headers(headers, name)
    headers.append((name, value))
    return headers


# RFC 9110 §5.6.1:  #element => [ element ] *( OWS "," OWS [ element ] )
# Empty elements are allowed and ignored; commas inside a quoted-string
# (§5.6.4) do not separate members.
def split_list(value: Optional[str]) -> list:
    """The members of a comma-separated list field, stripped, empties dropped."""
    if not value:
        return []
    if '"' not in value:
        return [m for m in (part.strip(" \t") for part in value.split(",")) if m]
    members = []
    current: list = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            members.append("".join(current).strip(" \t"))
            current = []
            continue
        current.append(ch)
    members.append("".join(current).strip(" \t"))
    return [m for m in members if m]


def has_directive(headers: Iterable, name: str, directive: str) -> bool:
    """True when a list field (``Cache-Control``...) carries ``directive``, with or without a value."""
    directive = directive.lower()
    for value in get_all(headers, name):
        for member in split_list(value):
            if member.partition("=")[0].strip(" \t").lower() == directive:
                return True
    return False


def add_vary(headers: list, field: str) -> list:
    """Add ``field`` to ``Vary`` (RFC 9110 §12.5.5), merging with what is there.

    ``Vary: *`` already covers everything; a field already listed (in any
    case, in any ``Vary`` line) is not repeated.
    """
    low = field.lower()
    for value in get_all(headers, "Vary"):
        for member in split_list(value):
            if member == "*" or member.lower() == low:
                return headers
    for i, (key, value) in enumerate(headers):
        if key.lower() == "vary":
            headers[i] = (key, f"{value}, {field}" if value.strip(" \t") else field)
            return headers
    headers.append(("Vary", field))
    return headers


# --------------------------------------------------------------------------
# Accept-Encoding (RFC 9110 §12.5.3) and weights (§12.4.2)
#
#   Accept-Encoding  = #( codings [ weight ] )
#   codings          = content-coding / "identity" / "*"
#   weight = OWS ";" OWS "q=" qvalue
#   qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )

def _qvalue(text: str) -> Optional[int]:
    """A qvalue in thousandths (0..1000), or None when it breaks the grammar."""
    whole, dot, frac = text.partition(".")
    if len(frac) > 3 or not (frac.isdigit() or frac == "") or not frac.isascii():
        return None
    frac = (frac + "000")[:3]
    if whole == "0":
        return int(frac)
    if whole == "1" and frac == "000":
        return 1000
    return None


def parse_accept_encoding(value: Optional[str]) -> dict:
    """``{coding: q}`` with codings lower-cased and q in thousandths (1000 = q=1).

    A member whose weight breaks the grammar is dropped (it states nothing
    we can trust); ``x-gzip`` is read as ``gzip`` (§8.4.1.3).
    """
    result: dict = {}
    for member in split_list(value):
        coding, *params = member.split(";")
        coding = coding.strip(" \t").lower()
        if not coding:
            continue
        q: Optional[int] = 1000
        for param in params:
            key, _, val = param.partition("=")
            if key.strip(" \t").lower() == "q":
                q = _qvalue(val.strip(" \t"))
        if q is None:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        # The same coding twice: the most favourable weight wins.
        result[coding] = max(q, result.get(coding, -1))
    return result


def _weight(accepted: dict, coding: str) -> int:
    if coding in accepted:
        return accepted[coding]
    if coding == "identity":
        # §12.5.3: identity is acceptable unless excluded by "identity;q=0"
        # or by "*;q=0" without a more specific "identity"; unnamed, it
        # ranks below every coding the client did name.
        return accepted.get("*", 1)
    return accepted.get("*", 0)


def accepts_encoding(header: Optional[str], coding: str) -> bool:
    """Does a request with this ``Accept-Encoding`` accept ``coding`` (e.g. "gzip")?

    No header at all means "no preference" in RFC 9110, but clients that
    understand compression always send it, so we answer False and serve
    identity: the safe reading, and what nginx and Apache do.
    """
    if header is None:
        return coding.lower() == "identity"
    return _weight(parse_accept_encoding(header), coding.lower()) > 0


def choose_encoding(header: Optional[str], available: Sequence) -> Optional[str]:
    """The coding of ``available`` (server's preference order) the client likes best.

    Returns None when none of them is acceptable (serve identity).
    """
    if header is None:
        return None
    accepted = parse_accept_encoding(header)
    best = None
    best_q = 0
    for coding in available:
        q = _weight(accepted, coding.lower())
        if q > best_q:
            best, best_q = coding, q
    return best


# --------------------------------------------------------------------------
# Entity-tags (RFC 9110 §8.8.3) and their comparison (§8.8.3.2)
#
#   entity-tag = [ weak ] opaque-tag
#   weak       = %s"W/"
#   opaque-tag = DQUOTE *etagc DQUOTE
#   etagc      = %x21 / %x23-7E / obs-text
#   If-None-Match = "*" / #entity-tag      (If-Match likewise)

#: What ``parse_etag_list`` returns for ``*`` ("any current representation").
ANY = "*"


def _etagc(ch: str) -> bool:
    o = ord(ch)
    return o == 0x21 or 0x23 <= o <= 0x7E or 0x80 <= o <= 0xFF


def _read_etag(value: str, i: int) -> tuple:
    """Parse one entity-tag at ``value[i:]``: ((weak, opaque), next index) or (None, i)."""
    weak = value.startswith("W/", i)
    j = i + 2 if weak else i
    if j >= len(value) or value[j] != '"':
        return None, i
    end = value.find('"', j + 1)
    if end < 0:
        return None, i
    opaque = value[j:end + 1]
    if not all(_etagc(c) for c in opaque[1:-1]):
        return None, i
    return (weak, opaque), end + 1


def parse_etag(value: Optional[str]) -> Optional[tuple]:
    """``(weak, '"opaque"')`` for one entity-tag, or None if it is not one."""
    if value is None:
        return None
    value = value.strip(" \t")
    tag, end = _read_etag(value, 0)
    return tag if tag is not None and end == len(value) else None


def parse_etag_list(value: Optional[str]) -> Any:
    """``If-None-Match``/``If-Match``: :data:`ANY`, a list of ``(weak, opaque)``, or None if malformed."""
    if value is None:
        return None
    value = value.strip(" \t")
    if value == "*":
        return ANY
    tags = []
    i, n = 0, len(value)
    while i < n:
        if value[i] in " \t,":
            i += 1
            continue
        tag, i2 = _read_etag(value, i)
        if tag is None:
            return None
        tags.append(tag)
        i = i2
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] != ",":
            return None
    return tags or None


def strong_match(a: Optional[tuple], b: Optional[tuple]) -> bool:
    """§8.8.3.2 strong comparison: neither weak, opaque tags identical."""
    return a is not None and b is not None and not a[0] and not b[0] and a[1] == b[1]


def weak_match(a: Optional[tuple], b: Optional[tuple]) -> bool:
    """§8.8.3.2 weak comparison: opaque tags identical, weakness ignored."""
    return a is not None and b is not None and a[1] == b[1]


def etag_in_list(header: Optional[str], etag: str, *, weak: bool = True) -> Optional[bool]:
    """Does the ``If-None-Match`` (weak comparison) / ``If-Match`` (strong) list match ``etag``?

    None when the header is absent or malformed (then it is ignored).
    """
    tags = parse_etag_list(header)
    if tags is None:
        return None
    if tags is ANY:
        return True
    mine = parse_etag(etag)
    compare = weak_match if weak else strong_match
    return any(compare(tag, mine) for tag in tags)


def make_weak(etag: str) -> str:
    """``"x"`` → ``W/"x"`` (a transformed body keeps a weak validator only, §8.8.1)."""
    return etag if etag.startswith("W/") else "W/" + etag


# --------------------------------------------------------------------------
# Range (RFC 9110 §14.1.1, §14.2)
#
#   Range          = ranges-specifier
#   ranges-specifier = range-unit "=" range-set
#   range-set      = 1#range-spec
#   range-spec     = int-range / suffix-range / other-range
#   int-range      = first-pos "-" [ last-pos ]
#   suffix-range   = "-" suffix-length
#   first-pos = last-pos = suffix-length = 1*DIGIT

#: More range-specs than this and the header is ignored (a whole 200 is
#: served): hundreds of tiny ranges are an amplification trick, not a client.
MAX_RANGES = 100
_HUGE = 10 ** 18


def _pos(text: str) -> Optional[int]:
    if not text or not text.isdigit() or not text.isascii():
        return None
    return int(text) if len(text) < 19 else _HUGE


def parse_range(value: Optional[str], size: int) -> Optional[list]:
    """Satisfiable byte ranges of a representation of ``size`` bytes.

    * None: no usable header (absent, not ``bytes``, malformed, too many
      ranges, empty representation): §14.2 lets the server ignore it and
      send the whole representation with 200.
    * ``[]``: syntactically valid but nothing satisfiable: 416.
    * ``[(first, last), ...]``: inclusive offsets, clamped to the size.
    """
    if value is None or size <= 0:
        return None
    unit, eq, range_set = value.partition("=")
    if not eq or unit.strip(" \t").lower() != "bytes":
        return None
    specs = split_list(range_set)
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges = []
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if first_text == "":
            suffix = _pos(last_text)
            if suffix is None:
                return None
            if suffix > 0:     # a suffix-range is satisfiable when its length is non-zero
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = _pos(first_text)
        if first is None:
            return None
        if last_text == "":
            last = size - 1
        else:
            last = _pos(last_text)
            if last is None or last < first:
                return None   # last-pos < first-pos makes the whole header invalid
        if first < size:       # an int-range is satisfiable when first-pos < length
            ranges.append((first, min(last, size - 1)))
    return ranges


def content_range(first: int, last: int, size: int) -> str:
    """``Content-Range`` of a 206 (§14.4): ``bytes 0-99/1234``."""
    return f"bytes {first}-{last}/{size}"
