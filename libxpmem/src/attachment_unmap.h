/* Ending one attachment for good: its mapping goes, and the broker forgets its record of it. Used
 * by xpmem_detach and by the attachment cache when it evicts an idle window. */
#ifndef XPMEM_ATTACHMENT_UNMAP_H
#define XPMEM_ATTACHMENT_UNMAP_H

#include <stdint.h>

#include "attachments.h"

/* Unmaps the window and tells the broker (when it gave the attachment an id). */
void attachment_unmap(const struct attachment *attachment);
/* Tells the broker its attachment `broker_attachment` is gone (no reply awaited beyond `done`). */
void attachment_tell_broker_detached(uint64_t broker_attachment);

#endif
