#!/bin/sh
# The shell floor of the CGI benchmark: the 14-byte hello from /bin/sh.
printf 'Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n'
