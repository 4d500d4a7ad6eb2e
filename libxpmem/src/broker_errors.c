#include "broker_errors.h"

#include <errno.h>

#include "wire.h"

int errno_for_broker_code(uint16_t code)
{
    switch (code) {
    case WIRE_NOT_FOUND: return ENOENT;
    case WIRE_PERMISSION_DENIED: return EACCES;
    case WIRE_INVALID_ARGUMENT: return EINVAL;
    case WIRE_PROTOCOL_MISMATCH: return EPROTO;
    case WIRE_MALFORMED_FRAME: return EPROTO;
    case WIRE_RESOURCE_EXHAUSTED: return ENOMEM;
    case WIRE_NOT_CONNECTED: return ENOTCONN;
    case WIRE_DEADLINE_MISSED: return ETIMEDOUT;
    case WIRE_BUSY: return EBUSY;
    default: return EIO; /* internalError and codes from a newer broker */
    }
}

const char *broker_code_name(uint16_t code)
{
    switch (code) {
    case WIRE_NOT_FOUND: return "not found";
    case WIRE_PERMISSION_DENIED: return "permission denied";
    case WIRE_INVALID_ARGUMENT: return "invalid argument";
    case WIRE_PROTOCOL_MISMATCH: return "protocol mismatch";
    case WIRE_MALFORMED_FRAME: return "malformed frame";
    case WIRE_RESOURCE_EXHAUSTED: return "resource exhausted";
    case WIRE_NOT_CONNECTED: return "not connected";
    case WIRE_INTERNAL_ERROR: return "internal error";
    case WIRE_DEADLINE_MISSED: return "deadline missed";
    case WIRE_BUSY: return "busy";
    default: return "unknown error";
    }
}
