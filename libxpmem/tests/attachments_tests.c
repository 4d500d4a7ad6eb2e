/* Unit tests of the attachment table (attachments.h) and its indexes with thousands of windows, no
 * broker: windows at made-up addresses that nothing maps (nothing here unmaps them), found by hit,
 * by an address anywhere inside, and evicted coldest first; and a long random run checked step by
 * step against a plain list that does what the table promises. */
#include <stdint.h>
#include <stdlib.h>

#include "attachments.h"
#include "test_report.h"

#define PAGE 4096UL
#define WINDOWS 5000
/* Window i starts at BASE + i * STRIDE and is 1 to 15 pages long: gaps lie between windows. */
#define BASE 0x100000000000UL
#define STRIDE (16 * PAGE)

static uintptr_t window_address(unsigned window) { return BASE + window * STRIDE; }
static size_t window_length(unsigned window) { return (1 + window % 15) * PAGE; }
static uint64_t window_apid(unsigned window) { return 1 + window % 3; }
static uint64_t window_segment(unsigned window) { return 100 + window % 7; }
/* Distinct per window, so that each window is the only one a hit on its (apid, offset, length) finds. */
static uint64_t window_offset(unsigned window) { return (uint64_t)window * STRIDE; }

static struct attachment held_window(unsigned window)
{
    return (struct attachment){.address = window_address(window), .length = window_length(window),
                               .apid = window_apid(window), .segment = window_segment(window),
                               .segment_offset = window_offset(window), .references = 1, .cacheable = true};
}

/* Deterministic draws (a 64-bit LCG's high bits). */
static uint64_t random_state = 0x2545F4914F6CDD1DULL;
static uint32_t draw(uint32_t bound)
{
    random_state = random_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)((random_state >> 33) % bound);
}

static void shuffle(unsigned *order, unsigned count)
{
    for (unsigned index = count - 1; index > 0; index--) {
        unsigned other = draw(index + 1), kept = order[index];
        order[index] = order[other];
        order[other] = kept;
    }
}

static bool add_all_held(void)
{
    attachments_forget_all();
    for (unsigned window = 0; window < WINDOWS; window++)
        if (attachments_add(held_window(window)) < 0)
            return false;
    return true;
}

/* The window found at `address`: its number, or -1 when none. */
static long window_at(uintptr_t address)
{
    struct attachment found;
    if (!attachments_find_containing(address, &found))
        return -1;
    return (long)((found.address - BASE) / STRIDE);
}

static void test_every_address_finds_its_window(void)
{
    if (!report("table: 5000 windows recorded", add_all_held(), "attachments_add failed"))
        return;
    unsigned wrong = 0, first_wrong = 0;
    for (unsigned window = 0; window < WINDOWS; window++) {
        uintptr_t start = window_address(window), end = start + window_length(window);
        bool right = window_at(start) == (long)window && window_at(end - 1) == (long)window
                     && window_at(start + window_length(window) / 2) == (long)window && window_at(end) == -1
                     && window_at(start + STRIDE - 1) == -1;
        if (!right && wrong++ == 0)
            first_wrong = window;
    }
    report("table: first, middle and last byte find their window among 5000; the gaps after them none", wrong == 0,
           "%u windows wrong, the first %u", wrong, first_wrong);
    report("table: nothing below the first window or above the last",
           window_at(BASE - 1) == -1 && window_at(0) == -1 && window_at(window_address(WINDOWS)) == -1
               && window_at(UINTPTR_MAX) == -1,
           "found one");
}

static void test_hits_find_the_right_address(void)
{
    add_all_held();
    unsigned wrong = 0;
    for (unsigned window = 0; window < WINDOWS; window++) {
        uintptr_t address = 0;
        if (!attachments_hold_cached(window_apid(window), window_offset(window), window_length(window), &address)
            || address != window_address(window))
            wrong++;
    }
    uintptr_t address = 0;
    bool other_apid = attachments_hold_cached(window_apid(7) + 1, window_offset(7), window_length(7), &address);
    bool other_length = attachments_hold_cached(window_apid(7), window_offset(7), window_length(7) + PAGE, &address);
    report("table: a hit on each of 5000 windows returns its address", wrong == 0, "%u wrong", wrong);
    report("table: no hit for another permit or another length", !other_apid && !other_length, "hit");
}

/* Windows that differ only by length share buckets often among 5000: each hit must still be its own. */
static void test_hits_tell_lengths_apart(void)
{
    attachments_forget_all();
    const uintptr_t stride = (WINDOWS + 1) * PAGE;
    bool added = true;
    for (unsigned window = 0; window < WINDOWS; window++) {
        struct attachment same_offset = held_window(0);
        same_offset.address = BASE + window * stride;
        same_offset.length = (window + 1) * PAGE;
        added = added && attachments_add(same_offset) == 0;
    }
    unsigned wrong = 0;
    for (unsigned window = 0; window < WINDOWS; window++) {
        uintptr_t address = 0;
        if (!attachments_hold_cached(window_apid(0), window_offset(0), (window + 1) * PAGE, &address)
            || address != BASE + window * stride)
            wrong++;
    }
    report("table: 5000 windows at one offset, each of its own length: each hit returns its own", added && wrong == 0,
           "%u wrong", wrong);
}

/* Detaches a random half of the windows (each twice held, then once, then idle), at a random
 * address inside each, and takes them back coldest first. */
static void test_random_detaches_and_coldest_first(void)
{
    add_all_held();
    static unsigned order[WINDOWS];
    for (unsigned window = 0; window < WINDOWS; window++)
        order[window] = window;
    shuffle(order, WINDOWS);
    unsigned wrong = 0;
    uintptr_t address;
    for (unsigned index = 0; index < WINDOWS / 2; index++) {
        unsigned window = order[index];
        attachments_hold_cached(window_apid(window), window_offset(window), window_length(window), &address);
        uintptr_t inside = window_address(window) + draw((uint32_t)window_length(window));
        struct attachment taken;
        if (attachments_release_containing(inside, true, &taken) != ATTACHMENT_STILL_HELD
            || attachments_release_containing(inside, true, &taken) != ATTACHMENT_IDLE
            || attachments_release_containing(inside, true, &taken) != ATTACHMENT_NOT_HELD)
            wrong++;
    }
    report("table: 2500 random detaches anywhere inside: still held, then idle, then not held", wrong == 0,
           "%u wrong", wrong);
    struct attachment_totals totals = attachments_totals();
    report("table: the totals count 5000 cached windows, 2500 of them idle",
           totals.cached_entries == WINDOWS && totals.idle_entries == WINDOWS / 2, "%zu cached, %zu idle",
           totals.cached_entries, totals.idle_entries);

    /* A hit takes a window off the idle list; its detach puts it back as the warmest. */
    unsigned rewarmed = order[0];
    struct attachment ignored;
    attachments_hold_cached(window_apid(rewarmed), window_offset(rewarmed), window_length(rewarmed), &address);
    attachments_release_containing(window_address(rewarmed), true, &ignored);

    unsigned out_of_order = 0, taken_count = 0;
    struct attachment coldest;
    uint64_t previous_use = 0;
    while (attachments_take_coldest_idle(&coldest)) {
        unsigned expected = taken_count + 1 < WINDOWS / 2 ? order[taken_count + 1] : rewarmed;
        if (coldest.address != window_address(expected) || coldest.last_used <= previous_use)
            out_of_order++;
        previous_use = coldest.last_used;
        taken_count++;
    }
    report("table: the 2500 idle windows are evicted in the order they went idle, a re-hit one last",
           out_of_order == 0 && taken_count == WINDOWS / 2, "%u out of order, %u taken", out_of_order, taken_count);
    unsigned still_found = 0;
    for (unsigned index = 0; index < WINDOWS; index++)
        still_found += window_at(window_address(order[index])) >= 0;
    report("table: after eviction exactly the held half is still found by address", still_found == WINDOWS / 2,
           "%u found", still_found);
}

static void test_detach_in_the_middle_takes_that_window_alone(void)
{
    add_all_held();
    unsigned window = 2345;
    uintptr_t middle = window_address(window) + window_length(window) / 2 + 123;
    struct attachment taken = {0};
    enum attachment_release outcome = attachments_release_containing(middle, false, &taken);
    report("table: a detach in the middle of a window takes that window",
           outcome == ATTACHMENT_TAKEN && taken.address == window_address(window) && taken.references == 0,
           "outcome %d, address %#lx", (int)outcome, (unsigned long)taken.address);
    report("table: its neighbours stay, it is gone",
           window_at(middle) == -1 && window_at(window_address(window - 1)) == (long)window - 1
               && window_at(window_address(window + 1)) == (long)window + 1
               && attachments_totals().cached_entries == WINDOWS - 1,
           "window_at(middle) %ld", window_at(middle));
}

static void test_stale_windows_go_first_and_miss(void)
{
    add_all_held();
    struct attachment ignored;
    for (unsigned window = 0; window < WINDOWS; window++)
        attachments_release_containing(window_address(window), true, &ignored);
    /* Segment 103: every 7th window from the 3rd; the range covers them all. */
    attachments_mark_stale(103, 0, UINT64_MAX);
    uintptr_t address;
    bool stale_hit = attachments_hold_cached(window_apid(3), window_offset(3), window_length(3), &address);
    unsigned stale_taken = 0, wrong_segment = 0;
    struct attachment stale;
    while (attachments_take_stale_idle(&stale)) {
        stale_taken++;
        wrong_segment += stale.segment != 103;
    }
    unsigned expected = (WINDOWS - 3 + 6) / 7;
    report("table: a stale window is not a hit", !stale_hit, "hit");
    report("table: take_stale_idle takes exactly the stale windows of the segment",
           stale_taken == expected && wrong_segment == 0, "%u taken (%u expected), %u of another segment", stale_taken,
           expected, wrong_segment);

    attachments_mark_stale(104, 0, UINT64_MAX);
    struct attachment coldest;
    attachments_take_coldest_idle(&coldest);
    report("table: a stale idle window is evicted before any fresh one", coldest.segment == 104,
           "took segment %llu", (unsigned long long)coldest.segment);
}

static void test_a_new_window_replaces_those_it_overlaps(void)
{
    add_all_held();
    /* From the middle of window 10 to the middle of window 12. */
    struct attachment over = held_window(10);
    over.address = window_address(10) + PAGE;
    over.length = 2 * STRIDE;
    over.segment_offset = 1ULL << 40;
    bool added = attachments_add(over) == 0;
    struct attachment found = {0};
    attachments_find_containing(window_address(11), &found);
    report("table: a window over others replaces them, and only them",
           added && found.address == over.address && window_at(window_address(10)) == -1
               && window_at(over.address + over.length) == -1 && window_at(window_address(9)) == 9
               && window_at(window_address(13)) == 13 && attachments_totals().cached_entries == WINDOWS - 2,
           "added %d, %zu entries", added, attachments_totals().cached_entries);
    attachments_forget_all();
    report("table: forget_all leaves nothing to find, count or hit",
           window_at(window_address(5)) == -1 && attachments_totals().cached_entries == 0
               && !attachments_hold_cached(window_apid(5), window_offset(5), window_length(5), &(uintptr_t){0}),
           "something left");
}

/* ---------------------------------------------------------------------------------------------
 * The model: what the table promises, as a plain list scanned for everything. */

struct modelled {
    unsigned window;
    unsigned references;
    uint64_t idle_since; /* the step it went idle; stale idle ones are coldest regardless */
    bool stale;
};
static struct modelled model[WINDOWS];
static unsigned model_count;

static long model_find(unsigned window)
{
    for (unsigned index = 0; index < model_count; index++)
        if (model[index].window == window)
            return index;
    return -1;
}

static void model_remove(long index) { model[index] = model[--model_count]; }

/* The coldest idle one: a stale one first (any), else the one idle longest. */
static long model_coldest(void)
{
    long chosen = -1;
    for (unsigned index = 0; index < model_count; index++) {
        const struct modelled *candidate = &model[index];
        if (candidate->references != 0)
            continue;
        if (chosen < 0 || (candidate->stale && !model[chosen].stale)
            || (candidate->stale == model[chosen].stale && candidate->idle_since < model[chosen].idle_since))
            chosen = index;
    }
    return chosen;
}

/* One random step on both; false when they disagree. Windows are drawn from the first 1000 so that
 * steps meet recorded ones often. */
static bool random_step(uint64_t step)
{
    unsigned window = draw(1000);
    long index = model_find(window);
    uintptr_t inside = window_address(window) + draw((uint32_t)window_length(window));
    struct attachment result;
    uintptr_t address;
    switch (draw(6)) {
    case 0: /* attach: a hit if recorded and fresh, else a new window (replacing a stale one) */
        if (attachments_hold_cached(window_apid(window), window_offset(window), window_length(window), &address)) {
            if (index < 0 || model[index].stale || address != window_address(window))
                return false;
            model[index].references++;
            return true;
        }
        if (index >= 0 && !model[index].stale)
            return false;
        if (index >= 0)
            model_remove(index);
        model[model_count++] = (struct modelled){.window = window, .references = 1};
        return attachments_add(held_window(window)) == 0;
    case 1: { /* detach somewhere inside */
        enum attachment_release outcome = attachments_release_containing(inside, true, &result);
        if (index < 0 || model[index].references == 0)
            return outcome == ATTACHMENT_NOT_HELD;
        if (--model[index].references > 0)
            return outcome == ATTACHMENT_STILL_HELD;
        if (model[index].stale) {
            model_remove(index);
            return outcome == ATTACHMENT_TAKEN && result.address == window_address(window);
        }
        model[index].idle_since = step;
        return outcome == ATTACHMENT_IDLE;
    }
    case 2: { /* evict the coldest */
        long coldest = model_coldest();
        bool taken = attachments_take_coldest_idle(&result);
        if (coldest < 0)
            return !taken;
        /* Among stale ones any may come first. */
        long actual = taken ? model_find((unsigned)((result.address - BASE) / STRIDE)) : -1;
        bool right = actual >= 0 && model[actual].references == 0
                     && (model[coldest].stale ? model[actual].stale : actual == coldest);
        if (right)
            model_remove(actual);
        return right;
    }
    case 3: /* find */
        return (index >= 0) == attachments_find_containing(inside, &result)
               && (index < 0 || result.address == window_address(window));
    case 4: /* the segment of this window goes stale (rarely) */
        if (draw(8) != 0)
            return true;
        attachments_mark_stale(window_segment(window), 0, UINT64_MAX);
        for (unsigned other = 0; other < model_count; other++)
            model[other].stale = model[other].stale || window_segment(model[other].window) == window_segment(window);
        return true;
    default: { /* totals */
        size_t held = 0, idle = 0;
        for (unsigned other = 0; other < model_count; other++) {
            idle += model[other].references == 0;
            held += model[other].references != 0;
        }
        struct attachment_totals totals = attachments_totals();
        return totals.cached_entries == held + idle && totals.idle_entries == idle;
    }
    }
}

static void test_random_steps_match_the_model(void)
{
    attachments_forget_all();
    model_count = 0;
    enum { STEPS = 200000 };
    uint64_t step = 0;
    while (step < STEPS && random_step(step))
        step++;
    report("table: 200000 random attaches, detaches, evictions, finds and invalidations agree with a plain list",
           step == STEPS, "disagreed at step %llu (%u modelled)", (unsigned long long)step, model_count);
    attachments_forget_all();
}

int main(void)
{
    test_every_address_finds_its_window();
    test_hits_find_the_right_address();
    test_hits_tell_lengths_apart();
    test_random_detaches_and_coldest_first();
    test_detach_in_the_middle_takes_that_window_alone();
    test_stale_windows_go_first_and_miss();
    test_a_new_window_replaces_those_it_overlaps();
    test_random_steps_match_the_model();
    return report_totals();
}
