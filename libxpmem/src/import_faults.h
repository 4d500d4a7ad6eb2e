/* An importer's attachments follow the exporter's address space, as with XPMEM, where an attachment
 * is filled by page faults that look up the exporter's current pages.
 *
 * Here an attachment maps the exporter's address-space file. When the exporter unmaps or moves
 * memory, its library frees those file pages (exporter_watch.h), which drops them from every
 * importer's page tables. An attachment's backed ranges are registered with userfaultfd
 * for missing pages, so the importer's next touch there arrives at this library's fault thread
 * instead of reading a fresh zero page: the thread asks the broker to have the exporter back that
 * part of the window again (what it maps there now, with zeros for pages it never touched) and lets
 * the access retry, which then reads the exporter's current bytes. Where the exporter has nothing
 * mapped any more, the faulting thread gets SIGBUS, as with XPMEM.
 *
 * The kernel registers only mappings that could be made writable: a read-only attachment maps the
 * file privately for that (window_map.c). */
#ifndef XPMEM_IMPORT_FAULTS_H
#define XPMEM_IMPORT_FAULTS_H

#include <stdint.h>

/* Starts following faults in [address, +length) of an attachment; -1 when the kernel refuses (the
 * attachment then works as before, without following). */
int import_faults_watch(uint64_t address, uint64_t length);
/* In a fork child: the parent's fault thread and registrations are not ours. */
void import_faults_forget(void);

#endif
