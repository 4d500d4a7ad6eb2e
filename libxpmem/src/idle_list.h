/* The idle records (nobody holds their window) from coldest to warmest, so that eviction takes the
 * coldest without a scan: a doubly linked list through the slots (attachment_slots.h). A record
 * joins at the warm end when it goes idle, which is when the attachments' clock ticks for it, so
 * the list stays in last_used order. Stale idle records join at the cold end: they can never be hit
 * again, so they are evicted first, and a stale one, if any, is found at the head. */
#ifndef XPMEM_IDLE_LIST_H
#define XPMEM_IDLE_LIST_H

#include <stdint.h>

void idle_list_append_warmest(uint32_t slot);
void idle_list_prepend_coldest(uint32_t slot);
/* Does nothing for a slot not in the list. */
void idle_list_remove(uint32_t slot);
/* The head, or NO_SLOT. */
uint32_t idle_list_coldest(void);
void idle_list_clear(void);

#endif
