#include "address_tree.h"

#include "attachment_slots.h"
#include "hash_mix.h"

static uint32_t root = NO_SLOT;

static uintptr_t address_of(uint32_t slot) { return attachment_slot(slot)->attachment.address; }

/* A heap priority fixed by the address: as good as a random one for balance, and nothing to store. */
static uint64_t priority_of(uint32_t slot) { return hash_mix(address_of(slot)); }

/* Splits the tree at `tree` into the records below `address` and those at or above it. */
static void split(uint32_t tree, uintptr_t address, uint32_t *below, uint32_t *above)
{
    if (tree == NO_SLOT) {
        *below = *above = NO_SLOT;
    } else if (address_of(tree) < address) {
        split(attachment_slot(tree)->higher, address, &attachment_slot(tree)->higher, above);
        *below = tree;
    } else {
        split(attachment_slot(tree)->lower, address, below, &attachment_slot(tree)->lower);
        *above = tree;
    }
}

/* Joins two trees, every address in `lower` below every address in `higher`. */
static uint32_t merge(uint32_t lower, uint32_t higher)
{
    if (lower == NO_SLOT)
        return higher;
    if (higher == NO_SLOT)
        return lower;
    if (priority_of(lower) > priority_of(higher)) {
        attachment_slot(lower)->higher = merge(attachment_slot(lower)->higher, higher);
        return lower;
    }
    attachment_slot(higher)->lower = merge(lower, attachment_slot(higher)->lower);
    return higher;
}

void address_tree_insert(uint32_t slot)
{
    uint32_t below, above;
    split(root, address_of(slot), &below, &above);
    attachment_slot(slot)->lower = attachment_slot(slot)->higher = NO_SLOT;
    root = merge(merge(below, slot), above);
}

void address_tree_remove(uint32_t slot)
{
    uintptr_t address = address_of(slot);
    uint32_t *link = &root;
    while (*link != slot)
        link = address < address_of(*link) ? &attachment_slot(*link)->lower : &attachment_slot(*link)->higher;
    *link = merge(attachment_slot(slot)->lower, attachment_slot(slot)->higher);
    attachment_slot(slot)->lower = attachment_slot(slot)->higher = NO_SLOT;
}

uint32_t address_tree_last_at_or_below(uintptr_t address)
{
    uint32_t found = NO_SLOT;
    for (uint32_t node = root; node != NO_SLOT;) {
        if (address_of(node) <= address) {
            found = node;
            node = attachment_slot(node)->higher;
        } else {
            node = attachment_slot(node)->lower;
        }
    }
    return found;
}

void address_tree_clear(void) { root = NO_SLOT; }
