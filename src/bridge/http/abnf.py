"""The HTTP/1.1 grammar the request parser enforces, one rule at a time.

Each rule quotes the ABNF of RFC 9110 (semantics) or RFC 9112 (HTTP/1.1
message syntax) it implements, with the regular expression or character set
built right under it, so a reviewer can check the parser against the RFC
line by line.  :mod:`bridge.http.protocol` uses these and nothing else to
decide what is valid.

The parser works on the request head decoded as latin-1 (one str character
per byte, PEP 3333's "bytes as str"), so every rule here is a str pattern.
"""
from __future__ import annotations

import re

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

# RFC 9110 §5.6.2:
#   token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_TOKEN = _TCHAR + "+"
TOKEN = re.compile(_TOKEN)

# RFC 9110 §5.1:  field-name = token
FIELD_NAME = TOKEN

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
HTTP_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
METHOD = TOKEN

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
ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)

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
HOST = re.compile(rf"(?:{_REG_NAME}|{_IP_LITERAL})(?::[0-9]*)?")

# A host a trusted proxy forwards (X-Forwarded-Host; RFC 7239 §5.3: the
# Forwarded "host" parameter has the syntax of Host) becomes the app's
# HTTP_HOST, so it must be the same grammar, with a uri-host that is not
# empty (an empty one names nothing, and is ignored).
FORWARDED_HOST = re.compile(rf"(?:{_REG_NAME_CHAR}+|{_IP_LITERAL})(?::[0-9]*)?")

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
CHUNK_LINE = re.compile(rf"([0-9A-Fa-f]{{1,16}}){_CHUNK_EXT}")

# RFC 9112 §7.1.2:  trailer-section = *( field-line CRLF )
# (same rules as header fields; parsed with protocol.parse_fields)
