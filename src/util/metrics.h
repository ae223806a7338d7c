/* Prometheus metrics: a small thread-safe registry rendered in the text exposition format
 * 0.0.4 (what `GET /metrics` serves on the worker and the backend).
 *
 * A registry holds metric families (counter, gauge, histogram), rendered in registration
 * order. A family has 0..FW_METRICS_MAX_LABELS label names; each combination of label values
 * is a child (an fw_metric), created on first use and kept until the registry is freed.
 *
 *   fw_metric_family *req;
 *   fw_metrics_counter(reg, "facework_requests_total", "HTTP requests answered.",
 *                      FW_LABELS("route", "status"), &req, NULL);
 *   fw_metric *ok = fw_metric_get(req, FW_LABELS("/v1/analyze", "200"));  // cache this
 *   fw_counter_inc(ok);                                                     // lock-free
 *
 * Ownership: the registry owns every family and child; pointers to them stay valid until
 * fw_metrics_free(). Names, help texts, label names and label values are copied.
 *
 * Thread safety: every function may be called from any thread. Updates of an existing child
 * (fw_counter_*, fw_gauge_*, fw_histogram_observe) are lock-free atomics; registering a
 * family and creating a child take a mutex; rendering may run concurrently with both.
 * Label arrays are NULL-terminated; FW_LABELS(...) builds one in place. */
#ifndef FW_UTIL_METRICS_H
#define FW_UTIL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most label names a family may have (histograms add `le` on top). */
#define FW_METRICS_MAX_LABELS 4

/* Content-Type of the rendered text. */
#define FW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A NULL-terminated array of strings, for label names and label values. */
#define FW_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct fw_metrics fw_metrics;             /* the registry */
typedef struct fw_metric_family fw_metric_family; /* one metric name, all its children */
typedef struct fw_metric fw_metric;               /* one child: one set of label values */

typedef enum fw_metric_type {
    FW_METRIC_COUNTER = 0,
    FW_METRIC_GAUGE,
    FW_METRIC_HISTOGRAM
} fw_metric_type;

/* Reads the current value of a callback child at scrape time (see fw_metrics_callback).
 * Called from the rendering thread, without any registry lock held; must be thread-safe
 * and fast. NaN is rendered as NaN. */
typedef double (*fw_metrics_read_fn)(void *user);

/* --- registry -------------------------------------------------------------------------- */

/* Creates an empty registry in *out. */
fw_err fw_metrics_new(fw_metrics **out, fw_error *err);

/* Frees the registry, its families and children. NULL is a no-op. No other thread may use
 * the registry or any pointer obtained from it during or after this call. */
void fw_metrics_free(fw_metrics *reg);

/* Registers a counter / gauge family. name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be unused
 * in this registry; help is any text (may be empty, not NULL); label_names is NULL (no
 * labels) or a NULL-terminated list of at most FW_METRICS_MAX_LABELS distinct names matching
 * [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__". A family without labels has its single
 * child (value 0) from the start. *out (may be NULL) receives the family. */
fw_err fw_metrics_counter(fw_metrics *reg, const char *name, const char *help,
                          const char *const *label_names, fw_metric_family **out, fw_error *err);
fw_err fw_metrics_gauge(fw_metrics *reg, const char *name, const char *help,
                        const char *const *label_names, fw_metric_family **out, fw_error *err);

/* Registers a histogram family with nbounds finite, strictly increasing upper bounds (an
 * implicit +Inf bucket follows; bounds are copied). Label names as above, and none may be
 * "le". An observation v is counted in the first bucket whose bound b satisfies v <= b. */
fw_err fw_metrics_histogram(fw_metrics *reg, const char *name, const char *help,
                            const char *const *label_names, const double *bounds, size_t nbounds,
                            fw_metric_family **out, fw_error *err);

/* Registers an unlabelled counter or gauge family whose value is read(user) at every render
 * (process RSS, queue depth, ...). type must be FW_METRIC_COUNTER or FW_METRIC_GAUGE. */
fw_err fw_metrics_callback(fw_metrics *reg, fw_metric_type type, const char *name, const char *help,
                           fw_metrics_read_fn read, void *user, fw_metric_family **out,
                           fw_error *err);

/* Adds to a counter or gauge family a child with the given label values whose value is
 * read(user) at every render, e.g. an info-style gauge {provider="cuda"} that returns 1.
 * Fails with FW_ERR_INVALID_ARGUMENT if that child already exists. *out may be NULL. */
fw_err fw_metrics_callback_child(fw_metric_family *fam, const char *const *label_values,
                                 fw_metrics_read_fn read, void *user, fw_metric **out,
                                 fw_error *err);

/* Renders every family in registration order (children in creation order) as Prometheus
 * text format 0.0.4 into a NUL-terminated malloc'd string *out (caller frees with free());
 * *out_len (may be NULL) receives its length without the NUL. */
fw_err fw_metrics_render(fw_metrics *reg, char **out, size_t *out_len, fw_error *err);

/* --- children ------------------------------------------------------------------------- */

/* Finds or creates the child of fam with these label values (NULL-terminated, exactly as
 * many as the family has label names; NULL for an unlabelled family). Values are any
 * UTF-8 text. Takes the family's mutex: cache the result on hot paths. */
fw_err fw_metric_family_child(fw_metric_family *fam, const char *const *label_values,
                              fw_metric **out, fw_error *err);

/* fw_metric_family_child() for callers that do not need the reason: NULL on failure (wrong
 * label count, out of memory; logged). Every update function accepts NULL as a no-op. */
fw_metric *fw_metric_get(fw_metric_family *fam, const char *const *label_values);

/* Counter updates; ignored on NULL, on a child of another type and on callback children.
 * fw_counter_add ignores negative and NaN amounts (a counter never goes down). */
void fw_counter_inc(fw_metric *m);
void fw_counter_add(fw_metric *m, double amount);

/* Gauge updates; ignored on NULL, on a child of another type and on callback children. */
void fw_gauge_set(fw_metric *m, double value);
void fw_gauge_add(fw_metric *m, double delta);
void fw_gauge_inc(fw_metric *m);
void fw_gauge_dec(fw_metric *m);

/* Histogram update; ignored on NULL and on a child of another type. */
void fw_histogram_observe(fw_metric *m, double value);

/* Current value of a counter or gauge child (read() for callback children); 0 for NULL and
 * for histogram children. */
double fw_metric_value(const fw_metric *m);

/* Number of observations and their sum for a histogram child; 0 for NULL or another type. */
uint64_t fw_histogram_count(const fw_metric *m);
double fw_histogram_sum(const fw_metric *m);

/* Formats a sample value the Prometheus way into buf (NUL-terminated, truncated to cap):
 * integral values below 2^63 in magnitude without exponent ("42", "-3"), others in the
 * shortest form that reads back to the same double ("0.1", "1e-07"), "+Inf", "-Inf", "NaN".
 * Returns the untruncated length, as snprintf does; 32 bytes always suffice. */
int fw_metrics_format_value(double value, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
