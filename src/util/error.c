#include "facework/error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const names[FW_ERR__COUNT] = {
    [FW_OK] = "ok",
    [FW_ERR_INVALID_ARGUMENT] = "invalid_argument",
    [FW_ERR_NOMEM] = "out_of_memory",
    [FW_ERR_IO] = "io_error",
    [FW_ERR_NOT_FOUND] = "not_found",
    [FW_ERR_EMPTY_INPUT] = "empty_input",
    [FW_ERR_UNSUPPORTED] = "unsupported",
    [FW_ERR_CORRUPT] = "corrupt",
    [FW_ERR_TOO_LARGE] = "too_large",
    [FW_ERR_TOO_MANY_PIXELS] = "too_many_pixels",
    [FW_ERR_MODEL] = "model_error",
    [FW_ERR_PROVIDER] = "provider_error",
    [FW_ERR_INFERENCE] = "inference_error",
    [FW_ERR_PARSE] = "parse_error",
    [FW_ERR_TIMEOUT] = "timeout",
    [FW_ERR_BUSY] = "busy",
    [FW_ERR_UNAVAILABLE] = "unavailable",
    [FW_ERR_AUTH] = "unauthorized",
    [FW_ERR_UNUSABLE_FACE] = "unusable_face",
    [FW_ERR_INTERNAL] = "internal_error",
};

const char *fw_err_name(fw_err code)
{
    if ((unsigned)code >= FW_ERR__COUNT || !names[code])
        return "unknown_error";
    return names[code];
}

fw_err fw_error_set(fw_error *err, fw_err code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void fw_error_clear(fw_error *err)
{
    if (err) {
        err->code = FW_OK;
        err->message[0] = '\0';
    }
}
