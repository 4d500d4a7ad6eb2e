/* Built against an installed prefix (pkg-config cray-xpmem) and run with only that prefix on
 * LD_LIBRARY_PATH: the library must load, find PREFIX/bin/xpmemd itself, start it and export. */
#include <stdio.h>

#include <xpmem.h>

int main(void)
{
    int version = xpmem_version();
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    printf("version %s segid %s\n", version >= 0 ? "ok" : "-1", segid > 0 ? "ok" : "-1");
    return version >= 0 && segid > 0 ? 0 : 1;
}
