/* The broker's failure codes as errno values, the way XPMEM callers expect to see them. */
#ifndef XPMEM_BROKER_ERRORS_H
#define XPMEM_BROKER_ERRORS_H

#include <stdint.h>

int errno_for_broker_code(uint16_t code);
const char *broker_code_name(uint16_t code);

#endif
