/* Line and block I/O on the rendezvous sockets (launch_wire.h). */
#include "launch_wire.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmforge/core.h"

int lmf_wire_write(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

int lmf_wire_send(int fd, const char *fmt, ...) {
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (len < 0) return -1;
    return lmf_wire_write(fd, buf, (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1);
}

int lmf_wire_line(int fd, char *buf, size_t n, double deadline) {
    size_t len = 0;
    for (;;) {
        if (deadline >= 0) {
            double left = deadline - lmf_time_sec();
            if (left <= 0) return -2;
            struct pollfd pf = {fd, POLLIN, 0};
            int k = poll(&pf, 1, (int)(left * 1000) + 1);
            if (k < 0 && errno == EINTR) continue;
            if (k == 0) return -2;
            if (k < 0) return -1;
        }
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        if (ch == '\n') break;
        if (len + 1 < n) buf[len++] = ch;
    }
    buf[len] = 0;
    return (int)len;
}

int lmf_wire_read(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}
