/* Where the broker listens: $XPMEM_SOCKET, else $XDG_RUNTIME_DIR/xpmem/xpmemd.sock, else
 * /tmp/xpmem-UID/xpmemd.sock — the same rule as every program of the project. */
#ifndef XPMEM_SOCKET_PATH_H
#define XPMEM_SOCKET_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* Writes the path; returns 0, or -1 (ENAMETOOLONG) when it does not fit a Unix socket address. */
int socket_path_resolve(char *path, size_t capacity);
/* The private per-user directory of the default socket. */
void socket_path_default_directory(char *directory, size_t capacity);
/* Whether $XPMEM_SOCKET chose the path (else the default rule did). */
bool socket_path_is_explicit(void);

#endif
