/* This process's connection to the broker: made on the first call (or xpmem_init), with hello,
 * then subscribe (the event channel and its thread). A connection the broker closed is replaced:
 * at once by a thread of its own when this process exports or holds permits (the broker restarted,
 * say), else on the next call. The new connection claims every exported segment back under its id;
 * permits get broker handles again when next used; windows already mapped stay mapped throughout.
 * A fork child starts with no connection and makes its own. */
#ifndef XPMEM_SESSION_H
#define XPMEM_SESSION_H

#include <stdbool.h>

#include "channel.h"

/* The connected channel, connecting (and starting a broker) if needed; NULL with errno. */
struct channel *session_channel(void);

/* Counts this connection's segments (the broker forgets them with the connection). Returns, for a
 * removal, whether it was the last. */
void session_segment_made(void);
bool session_segment_removed(void);
/* After the last window went and its memory was made private again: unless a make came meanwhile,
 * the emptied address-space file is closed and the next make starts a fresh one
 * (address_space_file_discard). `holding_exports`: the caller holds the exports lock for writing. */
void session_discard_address_space(bool holding_exports);

/* The event channel ended without the session closing it: reconnect (see above). Called by the
 * event thread as it ends. */
void session_broker_lost(void);
/* Whether a connection replaced an earlier one less than `nanoseconds` ago (exporters may still be
 * registering their segments again). */
bool session_reconnected_within(long long nanoseconds);
/* Whether the broker was lost, or a connection replaced it, less than `nanoseconds` ago: worth
 * waiting a little for, unlike a broker gone for longer. */
bool session_settling_within(long long nanoseconds);

#endif
