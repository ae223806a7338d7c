/* facework: error codes shared by every layer.
 *
 * Every fallible function returns an fw_err (FW_OK == 0) and, when the caller passes a
 * non-NULL fw_error*, fills it with the code and a human-readable message. The message
 * never contains image bytes or secrets. */
#ifndef FACEWORK_ERROR_H
#define FACEWORK_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fw_err {
    FW_OK = 0,
    FW_ERR_INVALID_ARGUMENT, /* a caller passed something unusable */
    FW_ERR_NOMEM,            /* allocation failed */
    FW_ERR_IO,               /* file or socket I/O failed */
    FW_ERR_NOT_FOUND,        /* file, model or resource does not exist */
    FW_ERR_EMPTY_INPUT,      /* zero-byte image or body */
    FW_ERR_UNSUPPORTED,      /* format, media type or feature not supported */
    FW_ERR_CORRUPT,          /* malformed or truncated data */
    FW_ERR_TOO_LARGE,        /* over a byte-size limit */
    FW_ERR_TOO_MANY_PIXELS,  /* over the pixel-count limit */
    FW_ERR_MODEL,            /* a model could not be loaded or has an unknown signature */
    FW_ERR_PROVIDER,         /* an execution provider is unavailable or failed to start */
    FW_ERR_INFERENCE,        /* ONNX Runtime failed while running a model */
    FW_ERR_PARSE,            /* malformed request, configuration or response text */
    FW_ERR_TIMEOUT,          /* a deadline passed */
    FW_ERR_BUSY,             /* a queue or pool is full; try again later */
    FW_ERR_UNAVAILABLE,      /* a peer or service is down, draining or refusing */
    FW_ERR_AUTH,             /* missing or wrong credentials */
    FW_ERR_UNUSABLE_FACE,    /* no face passes the requested quality checks */
    FW_ERR_INTERNAL,         /* a bug: an invariant did not hold */
    FW_ERR__COUNT
} fw_err;

#define FW_ERROR_MESSAGE_MAX 256

typedef struct fw_error {
    fw_err code;
    char message[FW_ERROR_MESSAGE_MAX];
} fw_error;

/* Stable snake_case name of a code ("corrupt", "too_large"), for JSON and logs. */
const char *fw_err_name(fw_err code);

/* Sets *err (when err is non-NULL) to code and a printf-style message; returns code so that
 * callers can write `return fw_error_set(err, FW_ERR_CORRUPT, "...")`. */
fw_err fw_error_set(fw_error *err, fw_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears *err to FW_OK and an empty message. err may be NULL. */
void fw_error_clear(fw_error *err);

#ifdef __cplusplus
}
#endif
#endif
