/* xpmem_attach_cache_stats: this library's extension (not XPMEM's API) reporting the attachment
 * cache's counters, to the caller and to the broker. */
#include <errno.h>

#include "attach_cache.h"
#include "attach_cache_report.h"
#include "export.h"
#include "xpmem.h"

XPMEM_EXPORT int xpmem_attach_cache_stats(struct xpmem_attach_cache_stats *stats)
{
    if (stats == NULL) {
        errno = EINVAL;
        return -1;
    }
    attach_cache_stats(stats);
    /* What the application reads is what `xpmemctl clients` shows. */
    attach_cache_report(stats, true);
    return 0;
}
