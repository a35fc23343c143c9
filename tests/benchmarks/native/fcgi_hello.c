/* The native ceiling of the FastCGI benchmark: a libfcgi responder that
 * answers like apps/benchapp.py (/hello, /64k, /echo), one request at a time
 * per process.  Built by the harness:  cc -O2 -o fcgi_hello fcgi_hello.c -lfcgi
 * and started with spawn-fcgi (-F N processes sharing one listening socket). */
#include <fcgiapp.h>
#include <stdlib.h>
#include <string.h>

static char big[65536];

static void reply(FCGX_Stream *out, const char *type, const char *body, long length)
{
    FCGX_FPrintF(out, "Status: 200 OK\r\nContent-Type: %s\r\nContent-Length: %ld\r\n\r\n",
                 type, length);
    if (length > 0)
        FCGX_PutStr(body, (int)length, out);
}

int main(void)
{
    FCGX_Request request;
    int i;

    for (i = 0; i < (int)sizeof big; i++)
        big[i] = (char)(i & 0xff);
    FCGX_Init();
    FCGX_InitRequest(&request, 0, 0);
    while (FCGX_Accept_r(&request) >= 0) {
        const char *path = FCGX_GetParam("PATH_INFO", request.envp);
        if (path == NULL)
            path = "";
        if (strcmp(path, "/hello") == 0) {
            reply(request.out, "text/plain", "Hello, world!\n", 14);
        } else if (strcmp(path, "/64k") == 0) {
            reply(request.out, "application/octet-stream", big, sizeof big);
        } else if (strcmp(path, "/echo") == 0) {
            const char *cl = FCGX_GetParam("CONTENT_LENGTH", request.envp);
            long length = cl ? strtol(cl, NULL, 10) : 0, got = 0;
            char *body = length > 0 ? malloc((size_t)length) : NULL;
            if (length > 0 && body == NULL) {
                FCGX_FPrintF(request.out, "Status: 500 Internal Server Error\r\n\r\n");
            } else {
                while (got < length) {
                    int n = FCGX_GetStr(body + got, (int)(length - got > 65536 ? 65536 : length - got),
                                        request.in);
                    if (n <= 0)
                        break;
                    got += n;
                }
                reply(request.out, "application/octet-stream", body, got);
            }
            free(body);
        } else {
            FCGX_FPrintF(request.out, "Status: 404 Not Found\r\nContent-Type: text/plain\r\n"
                                      "Content-Length: 10\r\n\r\nNot Found\n");
        }
        FCGX_Finish_r(&request);
    }
    return 0;
}
