/* The rendezvous connection's framing (launch_wire.c): text lines, and byte blocks sent as
 * "TAG <length>\n<bytes>". Shared by node 0, the other nodes and the rsh agent. */
#ifndef LMF_CLI_LAUNCH_WIRE_H
#define LMF_CLI_LAUNCH_WIRE_H

#include <stddef.h>

/* Writes all of fmt's output; 0, or -1 when the peer is gone. */
int lmf_wire_send(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int lmf_wire_write(int fd, const void *buf, size_t n);
/* Reads one line (without its '\n') into buf. deadline: lmf_time_sec() value, or < 0 for
 * none. Returns its length, -1 on end of stream or error, -2 on timeout. */
int lmf_wire_line(int fd, char *buf, size_t n, double deadline);
/* Reads exactly n bytes; 0 or -1. */
int lmf_wire_read(int fd, void *buf, size_t n);

#endif
