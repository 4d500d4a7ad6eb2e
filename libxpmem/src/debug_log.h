/* XPMEM_DEBUG=1: say on stderr why a call failed (UCX treats a failure as "no XPMEM here" and says nothing). */
#ifndef XPMEM_DEBUG_LOG_H
#define XPMEM_DEBUG_LOG_H

#include <stdbool.h>

bool debug_log_enabled(void);
void debug_log(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif
