/* Everything is hidden (-fvisibility=hidden) except the xpmem_* API marked with this. */
#ifndef XPMEM_EXPORT_H
#define XPMEM_EXPORT_H

#define XPMEM_EXPORT __attribute__((visibility("default")))

#endif
