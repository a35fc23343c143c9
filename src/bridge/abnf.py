"""The HTTP grammar, written once: every gateway, the WSGI core and the checkers use it.

Each rule quotes the ABNF of RFC 9110 (semantics) or RFC 9112 (HTTP/1.1
message syntax) it implements, with the regular expression, character set or
function built right under it, so a reviewer can check the code against the
RFC line by line (h11's ``_abnf.py`` idea).  Who uses what:

- tokens (:data:`TCHAR`, :func:`is_token`) and hop-by-hop names
  (:data:`HOP_BY_HOP`): the WSGI core (:mod:`bridge.wsgi`, an app's
  headers), the CGI response parser (:mod:`bridge.cgi.rfc3875`) and the
  contract checker (:mod:`bridge.lint`).  They are written in
  :mod:`bridge.tokens`, a module of a few lines, and named here too: the
  WSGI core imports that one alone: a plain CGI request (~50 M
  instructions) pays 0.42 M for it, and would pay 1.0 M for this whole
  module (callgrind, ``import`` with gc disabled: 30.94 M for ``bridge``,
  31.36 M with ``bridge.tokens``, 31.94 M with ``bridge.abnf``);
- field values (:data:`HEAD_ALLOWED_BYTES`, :func:`has_control_chars`): the
  HTTP request parser, the CGI response parser, the checker;
- dates (:func:`http_date`, :func:`parse_http_date`): the HTTP server's
  ``Date``, Static's ``Last-Modified`` and conditional requests;
- the request line, Host, chunk lines (the regular expressions):
  :mod:`bridge.http.protocol` and :mod:`bridge.http.readers`, which use
  these and nothing else to decide what is valid.

This module imports no ``re``: the regular expressions are compiled on
first use (:func:`__getattr__`, PEP 562), by the HTTP server, so the checker
and the CGI response parser do not pay for them.

Rules work on str decoded as latin-1 (one character per byte, PEP 3333's
"bytes as str").
"""
# No `from __future__ import annotations` and no `import re` (see above).
from bridge.tokens import HOP_BY_HOP, TCHAR, is_token

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = [
    "DIGITS", "OWS", "TCHAR", "is_token", "HOP_BY_HOP", "HEAD_ALLOWED_BYTES", "has_control_chars",
    "http_date", "parse_http_date",
    "TOKEN", "FIELD_NAME", "METHOD", "HTTP_VERSION", "ABSOLUTE_FORM", "HOST", "FORWARDED_HOST",
    "CHUNK_LINE",
]

#: The regular expressions, by name: ``(pattern, name it is an alias of)``.
#: Compiled on first access by :func:`__getattr__`.
_PATTERNS: dict = {}


def __getattr__(name: str):
    """Compile a regular expression of this grammar the first time it is used (PEP 562)."""
    pattern = _PATTERNS.get(name)
    if pattern is None:
        raise AttributeError(f"module 'bridge.abnf' has no attribute {name!r}")
    import re   # lazy: only the HTTP parser uses the regexes, never the CGI path
    compiled = re.compile(pattern)
    for alias, same in _PATTERNS.items():
        if same == pattern:
            globals()[alias] = compiled
    return compiled


# RFC 5234 appendix B.1 core rules:
#   DIGIT  = %x30-39
#   HEXDIG = DIGIT / "A" / "B" / "C" / "D" / "E" / "F"   (case-insensitive)
#   VCHAR  = %x21-7E
#   SP = %x20, HTAB = %x09, CR = %x0D, LF = %x0A, CTL = %x00-1F / %x7F
DIGITS = frozenset("0123456789")

# RFC 9110 §5.6.3:
#   OWS = *( SP / HTAB )      ; optional whitespace
#   BWS = OWS                 ; "bad" whitespace, must be parsed but never produced
OWS = " \t"
_OWS = r"[ \t]*"

# RFC 9110 §5.6.2:  token = 1*tchar
# TCHAR, is_token (the set and the check) are in bridge.tokens, with the ABNF;
# the regular expression for the parser is here:
_TCHAR = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_TOKEN = _TCHAR + "+"
_PATTERNS["TOKEN"] = _TOKEN

# RFC 9110 §5.1:  field-name = token
_PATTERNS["FIELD_NAME"] = _TOKEN

# RFC 9110 §7.6.1:  hop-by-hop fields: HOP_BY_HOP, in bridge.tokens.

# RFC 9110 §5.5:
#   field-value   = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar   = VCHAR / obs-text
#   obs-text      = %x80-FF
# "Field values containing CR, LF, or NUL characters are invalid and
# dangerous ... a recipient ... MUST either reject the message or replace each
# of those characters with SP"; other CTLs are invalid too.  We reject them.
# The check runs once over the whole head as bytes (one C-level pass):
# deleting every allowed byte must leave nothing.
HEAD_ALLOWED_BYTES = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F), *range(0x80, 0x100)])


def has_control_chars(value: str) -> bool:
    """A CTL other than HTAB (CR, LF and NUL included) in a field value (str)."""
    return any((c < " " and c != "\t") or c == "\x7f" for c in value)


# RFC 9112 §5.1 / §5.2:
#   field-line = field-name ":" OWS field-value OWS
#   obs-fold   = OWS CRLF RWS      ; a line starting with SP/HTAB
# "No whitespace is allowed between the field name and colon ... A server MUST
# reject, with a response status code of 400 (Bad Request), any received
# request message that contains whitespace between a header field name and
# colon."  A server receiving obs-fold "MUST either reject the message by
# sending a 400 (Bad Request) ..." -- we do.
# (Implemented in protocol.parse_fields with str.partition + FIELD_NAME.)

# RFC 9112 §3:
#   request-line = method SP request-target SP HTTP-version
# RFC 9110 §9.1:  method = token
# RFC 9112 §2.3:
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT
#   HTTP-name    = %s"HTTP"       ; case-sensitive
_PATTERNS["HTTP_VERSION"] = r"HTTP/([0-9])\.([0-9])"
_PATTERNS["METHOD"] = _TOKEN

# RFC 9112 §3.2:
#   request-target = origin-form / absolute-form / authority-form / asterisk-form
#   origin-form    = absolute-path [ "?" query ]
#   absolute-form  = absolute-URI
#   authority-form = uri-host ":" port
#   asterisk-form  = "*"
# RFC 3986 §3:  absolute-URI = scheme ":" hier-part [ "?" query ]
#               scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# For HTTP the hier-part is "//" authority path-abempty.  The parser splits
# targets with str methods; this rule recognises the absolute form.
_PATTERNS["ABSOLUTE_FORM"] = r"(?s)([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)"

# RFC 9110 §7.2:  Host = uri-host [ ":" port ]
# RFC 9110 §4.1:  uri-host = <host, see [URI], Section 3.2.2>
# RFC 3986 §3.2.2:
#   host        = IP-literal / IPv4address / reg-name
#   IP-literal  = "[" ( IPv6address / IPvFuture ) "]"
#   IPvFuture   = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
#   reg-name    = *( unreserved / pct-encoded / sub-delims )
#   unreserved  = ALPHA / DIGIT / "-" / "." / "_" / "~"
#   pct-encoded = "%" HEXDIG HEXDIG
#   sub-delims  = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
# RFC 3986 §3.2.3:  port = *DIGIT
# IPv4address is a special case of reg-name.  No "/", "?", "#", "@"
# (userinfo), whitespace or control can appear, so a Host cannot carry a
# path, a query or a second field.
_REG_NAME_CHAR = r"(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_REG_NAME = _REG_NAME_CHAR + "*"
# RFC 3986 §3.2.2:
#   IPv6address =                            6( h16 ":" ) ls32
#               /                       "::" 5( h16 ":" ) ls32
#               / [               h16 ] "::" 4( h16 ":" ) ls32
#               / [ *1( h16 ":" ) h16 ] "::" 3( h16 ":" ) ls32
#               / [ *2( h16 ":" ) h16 ] "::" 2( h16 ":" ) ls32
#               / [ *3( h16 ":" ) h16 ] "::"    h16 ":"   ls32
#               / [ *4( h16 ":" ) h16 ] "::"              ls32
#               / [ *5( h16 ":" ) h16 ] "::"              h16
#               / [ *6( h16 ":" ) h16 ] "::"
#   h16         = 1*4HEXDIG
#   ls32        = ( h16 ":" h16 ) / IPv4address
#   IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet
#   dec-octet   = DIGIT / %x31-39 DIGIT / "1" 2DIGIT / "2" %x30-34 DIGIT / "25" %x30-35
_H16 = r"[0-9A-Fa-f]{1,4}"
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "|".join((
    rf"(?:{_H16}:){{6}}{_LS32}",
    rf"::(?:{_H16}:){{5}}{_LS32}",
    rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
))
_IPVFUTURE = r"v[0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+"
_IP_LITERAL = rf"\[(?:{_IPV6}|{_IPVFUTURE})\]"
_PATTERNS["HOST"] = rf"(?:{_REG_NAME}|{_IP_LITERAL})(?::[0-9]*)?"

# A host a trusted proxy forwards (X-Forwarded-Host; RFC 7239 §5.3: the
# Forwarded "host" parameter has the syntax of Host) becomes the app's
# HTTP_HOST, so it must be the same grammar, with a uri-host that is not
# empty (an empty one names nothing, and is ignored).
_PATTERNS["FORWARDED_HOST"] = rf"(?:{_REG_NAME_CHAR}+|{_IP_LITERAL})(?::[0-9]*)?"

# RFC 9110 §8.6:  Content-Length = 1*DIGIT
# (checked with str.isdigit() + isascii(): "+5", "-1", "0x5", "1 2" all fail)

# RFC 9112 §6.1:
#   Transfer-Encoding = #transfer-coding
#   transfer-coding   = token *( OWS ";" OWS transfer-parameter )
# RFC 9110 §5.6.1:  #element lists are comma separated, empty elements ignored.
# RFC 9112 §7: "chunked" is case-insensitive, must be the final coding and
# must not be applied more than once.

# RFC 9110 §7.6.1:
#   Connection        = #connection-option
#   connection-option = token

# RFC 9110 §10.1.1:  Expect = #expectation; "100-continue" is the only one defined.

# RFC 9112 §7.1:
#   chunked-body   = *chunk last-chunk trailer-section CRLF
#   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#   chunk-size     = 1*HEXDIG
#   last-chunk     = 1*("0") [ chunk-ext ] CRLF
#   chunk-data     = 1*OCTET
# RFC 9112 §7.1.1:
#   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token
#   chunk-ext-val  = token / quoted-string
# RFC 9110 §5.6.4:
#   quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text )
# Chunk lines must end in CRLF: a bare LF there is where front ends and back
# ends disagree ("funky chunks" smuggling), so it is rejected.
_QUOTED_STRING = r'"(?:[\t !\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = rf"(?:{_OWS};{_OWS}{_TOKEN}(?:{_OWS}={_OWS}(?:{_TOKEN}|{_QUOTED_STRING}))?)*"
_PATTERNS["CHUNK_LINE"] = rf"([0-9A-Fa-f]{{1,16}}){_CHUNK_EXT}"

# RFC 9112 §7.1.2:  trailer-section = *( field-line CRLF )
# (same rules as header fields; parsed with protocol.parse_fields)


# --------------------------------------------------------------------------
# HTTP dates (RFC 9110 §5.6.7)
#
#   HTTP-date    = IMF-fixdate / obs-date
#   IMF-fixdate  = day-name "," SP date1 SP time-of-day SP GMT   ; Sun, 06 Nov 1994 08:49:37 GMT
#   obs-date     = rfc850-date / asctime-date
#   rfc850-date  = day-name-l "," SP date2 SP time-of-day SP GMT ; Sunday, 06-Nov-94 08:49:37 GMT
#   asctime-date = day-name SP date3 SP time-of-day SP year      ; Sun Nov  6 08:49:37 1994
#
# Senders MUST generate IMF-fixdate; recipients MUST accept all three.
# strftime() would follow the locale, so the names are spelled out here.

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAYS_LONG = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(_MONTHS)}


def http_date(timestamp: float) -> str:
    """IMF-fixdate for a POSIX timestamp: ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    import time   # lazy: the CGI path imports this module and never dates a response
    t = time.gmtime(timestamp)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (no calendar import)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _two_digits(text: str) -> "Optional[int]":
    return int(text) if len(text) == 2 and text.isdigit() and text.isascii() else None


def _timestamp(year: int, month: "Optional[int]", day: "Optional[int]", clock: str) -> "Optional[int]":
    # time-of-day = hour ":" minute ":" second  (2DIGIT each; second may be 60, a leap second)
    parts = clock.split(":")
    if month is None or day is None or len(parts) != 3:
        return None
    hour, minute, second = (_two_digits(p) for p in parts)
    if hour is None or minute is None or second is None:
        return None
    if hour > 23 or minute > 59 or second > 60 or not 1 <= day <= _month_days(year, month):
        return None
    return ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second


def parse_http_date(value: "Optional[str]", now: "Optional[float]" = None) -> "Optional[int]":
    """Seconds since the epoch for any of the three HTTP-date forms, or None.

    ``now`` (default: the clock) places the two-digit years of rfc850-date:
    a date more than 50 years in the future means the most recent past year
    with those digits (§5.6.7).
    """
    if not value:
        return None
    fields = value.strip(" \t").split()
    try:
        if len(fields) == 6 and fields[0][:-1] in _DAYS and fields[0][-1] == "," and fields[5] == "GMT":
            # IMF-fixdate: date1 = day SP month SP year (2DIGIT, 4DIGIT)
            _, day, month, year, clock, _ = fields
            if len(year) != 4 or not year.isdigit() or not year.isascii():
                return None
            return _timestamp(int(year), _MONTH_NUMBER.get(month), _two_digits(day), clock)
        if len(fields) == 4 and fields[0][:-1] in _DAYS_LONG and fields[0][-1] == "," and fields[3] == "GMT":
            # rfc850-date: date2 = day "-" month "-" 2DIGIT
            dmy = fields[1].split("-")
            if len(dmy) != 3 or _two_digits(dmy[2]) is None:
                return None
            import time
            this_year = time.gmtime(time.time() if now is None else now).tm_year
            full_year = this_year - this_year % 100 + int(dmy[2])
            if full_year > this_year + 50:
                full_year -= 100
            return _timestamp(full_year, _MONTH_NUMBER.get(dmy[1]), _two_digits(dmy[0]), fields[2])
        if len(fields) == 5 and fields[0] in _DAYS:
            # asctime-date: date3 = month SP ( 2DIGIT / ( SP DIGIT ))
            _, month, day, clock, year = fields
            if not (len(day) in (1, 2) and day.isdigit() and day.isascii()):
                return None
            if len(year) != 4 or not year.isdigit() or not year.isascii():
                return None
            return _timestamp(int(year), _MONTH_NUMBER.get(month), int(day), clock)
    except ValueError:
        return None
    return None
