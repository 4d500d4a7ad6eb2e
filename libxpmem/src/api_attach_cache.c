/* xpmem_attach_cache_stats: this library's extension (not XPMEM's API) reporting the attachment
 * cache's counters. */
#include <errno.h>

#include "attach_cache.h"
#include "export.h"
#include "xpmem.h"

XPMEM_EXPORT int xpmem_attach_cache_stats(struct xpmem_attach_cache_stats *stats)
{
    if (stats == NULL) {
        errno = EINVAL;
        return -1;
    }
    attach_cache_stats(stats);
    return 0;
}
