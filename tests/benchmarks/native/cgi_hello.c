/* The native floor of the CGI benchmark: a C program that prints the 14-byte
 * hello as a CGI response (RFC 3875 section 6).  Process start and exec are
 * all it costs.  Built by the harness:  cc -O2 -o hello-c cgi_hello.c */
#include <unistd.h>

int main(void)
{
    static const char response[] =
        "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
    return write(1, response, sizeof response - 1) == (ssize_t)(sizeof response - 1) ? 0 : 1;
}
