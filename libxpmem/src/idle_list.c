#include "idle_list.h"

#include "attachment_slots.h"

static uint32_t coldest = NO_SLOT, warmest = NO_SLOT;

void idle_list_append_warmest(uint32_t slot)
{
    struct attachment_slot *joining = attachment_slot(slot);
    joining->colder = warmest;
    joining->warmer = NO_SLOT;
    joining->in_idle_list = true;
    if (warmest != NO_SLOT)
        attachment_slot(warmest)->warmer = slot;
    else
        coldest = slot;
    warmest = slot;
}

void idle_list_prepend_coldest(uint32_t slot)
{
    struct attachment_slot *joining = attachment_slot(slot);
    joining->colder = NO_SLOT;
    joining->warmer = coldest;
    joining->in_idle_list = true;
    if (coldest != NO_SLOT)
        attachment_slot(coldest)->colder = slot;
    else
        warmest = slot;
    coldest = slot;
}

void idle_list_remove(uint32_t slot)
{
    struct attachment_slot *leaving = attachment_slot(slot);
    if (!leaving->in_idle_list)
        return;
    if (leaving->colder != NO_SLOT)
        attachment_slot(leaving->colder)->warmer = leaving->warmer;
    else
        coldest = leaving->warmer;
    if (leaving->warmer != NO_SLOT)
        attachment_slot(leaving->warmer)->colder = leaving->colder;
    else
        warmest = leaving->colder;
    leaving->colder = leaving->warmer = NO_SLOT;
    leaving->in_idle_list = false;
}

uint32_t idle_list_coldest(void) { return coldest; }

void idle_list_clear(void) { coldest = warmest = NO_SLOT; }
