/* The records (attachment_slots.h) ordered by the address of their window, to find the window
 * containing an address (a fault, a detach) in O(log n) among thousands of idle cached windows.
 * Windows recorded never overlap (attachments_add forgets those a new window replaced), so each
 * address is in at most one and the one containing it is the last starting at or below it.
 *
 * A treap: a binary search tree by address that is also a heap by a priority drawn from the
 * address's hash, which keeps it balanced in expectation whatever order windows come and go in,
 * with no rebalancing state, and links in the slots, so that inserting allocates nothing. */
#ifndef XPMEM_ADDRESS_TREE_H
#define XPMEM_ADDRESS_TREE_H

#include <stdint.h>

/* The slot's window must not overlap any in the tree. */
void address_tree_insert(uint32_t slot);
void address_tree_remove(uint32_t slot);
/* The record whose window starts at the highest address not above `address`, or NO_SLOT. */
uint32_t address_tree_last_at_or_below(uintptr_t address);
void address_tree_clear(void);

#endif
