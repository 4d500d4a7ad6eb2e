/* The segments this process exports, with what registering each again takes: after the broker
 * restarted (or dropped this connection), the session claims every one back under the id its peers
 * already hold, proving ownership with the reclaim token chosen at xpmem_make. */
#ifndef XPMEM_EXPORTS_H
#define XPMEM_EXPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct export {
    uint64_t segment;
    /* 128 random bits only this process knows; the broker derives the id from them and our uid. */
    uint64_t token[2];
    uint64_t base, length;
    uint32_t permit;
};

/* Fills `token` from the kernel's random source; -1 with errno when it cannot. */
int exports_draw_token(uint64_t token[2]);
int exports_add(const struct export *export);
bool exports_remove(uint64_t segment);
bool exports_contains(uint64_t segment);
/* The modes of windows removed while others live (their memory stays in the file until the last
 * window goes), up to `capacity` of them into `into`; returns how many were written. After a
 * restart of the broker, which forgets them, re-registration passes them on (session.c). */
size_t exports_retired_permits(uint32_t *into, size_t capacity);
/* Copies up to `capacity` exports into `into` and returns how many there are in all. */
size_t exports_list(struct export *into, size_t capacity);

/* A make or a remove holds this shared from its call to the broker to its change of the table; a
 * new connection holds it alone from before its socket exists to its last claim. Otherwise a
 * make whose claim reached the old broker could be added just after the snapshot (and never be
 * registered with the new broker), and a remove could reach the old broker just after the snapshot
 * (and the new broker would have the segment back). Take it after session_channel(), which may
 * restore, never before. */
void exports_begin_change(void);
void exports_end_change(void);
void exports_begin_restore(void);
void exports_end_restore(void);

/* In a fork child: the lock as if never taken, then everything forgotten (the child exports
 * nothing of the parent's). */
void exports_reset_after_fork(void);

#endif
