/* xpmem_init and xpmem_version: whether a broker can be reached (UCX's "is XPMEM available"). */
#include <stddef.h>

#include "export.h"
#include "session.h"
#include "wire.h"
#include "xpmem.h"

/* The wire protocol in the high half, this library's revision in the low half. */
#define LIBXPMEM_VERSION ((WIRE_VERSION << 16) | 1)

XPMEM_EXPORT int xpmem_init(void)
{
    return session_channel() != NULL ? 0 : -1;
}

XPMEM_EXPORT int xpmem_version(void)
{
    return session_channel() != NULL ? LIBXPMEM_VERSION : -1;
}
