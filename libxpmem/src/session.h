/* This process's connection to the broker: made on the first call (or xpmem_init), with hello,
 * then subscribe (the event channel and its thread). A connection the broker closed is replaced
 * on the next call; everything obtained through the old one (segments, permits, attachment ids)
 * is gone with it. A fork child starts with no connection and makes its own. */
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

#endif
