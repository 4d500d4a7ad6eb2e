/* Registering a window of the address-space file with the broker under the id its reclaim token
 * stands for: at xpmem_make (a first claim), and again after a reconnection. */
#ifndef XPMEM_EXPORT_CLAIMS_H
#define XPMEM_EXPORT_CLAIMS_H

#include "channel.h"
#include "exports.h"

/* Sends claimAddressSpace for `export` (its segment 0 for a first claim) with both descriptors of
 * the file, and sets export->segment to the id the broker answered. -1 with errno. */
int export_claims_send(struct channel *channel, struct export *export);

#endif
