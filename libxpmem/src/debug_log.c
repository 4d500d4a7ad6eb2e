/* Diagnostics for XPMEM_DEBUG=1, written with one write(2) per line so lines from threads and
 * processes do not interleave. */
#include "debug_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool debug_log_enabled(void)
{
    /* Read each time: a test may set the variable after the library is loaded, and this is only
     * called on failure paths. */
    const char *value = getenv("XPMEM_DEBUG");
    return value != NULL && value[0] != '\0' && strcmp(value, "0") != 0;
}

void debug_log(const char *format, ...)
{
    if (!debug_log_enabled())
        return;
    char line[1024];
    int prefix = snprintf(line, sizeof line, "libxpmem[%d]: ", (int)getpid());
    va_list arguments;
    va_start(arguments, format);
    int body = vsnprintf(line + prefix, sizeof line - (size_t)prefix - 1, format, arguments);
    va_end(arguments);
    size_t length = (size_t)prefix + (body < 0 ? 0 : (size_t)body);
    if (length > sizeof line - 2)
        length = sizeof line - 2;
    line[length++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, length);
    (void)ignored;
}
