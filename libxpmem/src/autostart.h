/* Starting a per-user broker when none answers, so `mpirun` with UCX works with no setup. */
#ifndef XPMEM_AUTOSTART_H
#define XPMEM_AUTOSTART_H

#include <stdbool.h>
#include <stddef.h>

/* False when XPMEM_AUTOSTART=0. */
bool autostart_allowed(void);
/* Starts `xpmemd --socket socket_path` as a daemon (its own session, stdio on /dev/null, its log
 * beside the socket). Returns 0 once it was launched (not necessarily listening: a broker that
 * loses the race for SOCKET.lock exits, and the caller connects to the winner), -1 with errno. */
int autostart_broker(const char *socket_path);

#endif
