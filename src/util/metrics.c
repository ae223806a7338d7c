/* Prometheus metrics registry; see metrics.h for the contract.
 *
 * Families form an append-only list owned by the registry, children an append-only list (plus
 * a hash index for lookups) owned by their family. Nothing is removed before
 * fw_metrics_free(), so a renderer snapshots (head, count) of a list under its mutex and
 * walks exactly that many nodes afterwards without holding any lock.
 *
 * Values: a counter keeps integral increments in an atomic uint64 and other amounts in an
 * atomic double (its bits in a uint64, updated with a CAS loop); a gauge is one atomic double;
 * a histogram has one atomic uint64 per bucket (not cumulative: cumulated at render time, so
 * `_count` always equals the +Inf bucket) and an atomic double sum. */
#include "util/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct fw_metric {
    fw_metric *next;  /* creation order, within the family */
    fw_metric *hnext; /* hash chain */
    uint64_t hash;
    fw_metric_type type;
    size_t nbounds;       /* histogram: the family's bounds, copied here for the hot path */
    const double *bounds; /* owned by the family */
    fw_metrics_read_fn read;
    void *user;
    char *values[FW_METRICS_MAX_LABELS];
    char *labels;               /* rendered `a="x",b="y"` (escaped, no braces); "" without labels */
    _Atomic uint64_t count;     /* counter: integral increments */
    _Atomic uint64_t bits;      /* counter: other amounts; gauge: value; histogram: sum */
    _Atomic uint64_t buckets[]; /* histogram: nbounds + 1 counts, the last one for +Inf */
};

struct fw_metric_family {
    fw_metric_family *next; /* registration order */
    fw_metric_type type;
    char *name;
    char *help;
    size_t nlabels;
    char *label_names[FW_METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    pthread_mutex_t mu; /* guards the fields below */
    fw_metric *head, *tail;
    size_t count;
    fw_metric **table; /* hash index, tsize buckets (a power of two) */
    size_t tsize;
};

struct fw_metrics {
    pthread_mutex_t mu; /* guards the fields below */
    fw_metric_family *head, *tail;
    size_t count;
};

/* ------------------------------------------------------------------------------------ */
/* atomics on doubles                                                                   */

static inline double bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double atomic_load_double(const _Atomic uint64_t *p)
{
    /* The cast drops const only for C11 implementations whose atomic_load takes non-const. */
    return bits_to_double(atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed));
}

static inline void atomic_add_double(_Atomic uint64_t *p, double delta)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    uint64_t next;
    do {
        next = double_to_bits(bits_to_double(old) + delta);
    } while (!atomic_compare_exchange_weak_explicit(p, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

/* ------------------------------------------------------------------------------------ */
/* growable text buffer                                                                 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

/* Appends s escaped for a label value (quote true) or a HELP text (quote false). */
static void sb_escaped(sbuf *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quote)
            rep = "\\\"";
        if (rep) {
            sb_put(b, run, (size_t)(s - run));
            sb_puts(b, rep);
            run = s + 1;
        }
    }
    sb_put(b, run, (size_t)(s - run));
}

static void sb_value(sbuf *b, double v)
{
    char tmp[40];
    int n = fw_metrics_format_value(v, tmp, sizeof tmp);
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

int fw_metrics_format_value(double v, char *buf, size_t cap)
{
    if (isnan(v))
        return snprintf(buf, cap, "NaN");
    if (isinf(v))
        return snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    if (fabs(v) < 9223372036854775808.0 && v == (double)(int64_t)v)
        return snprintf(buf, cap, "%" PRId64, (int64_t)v);
    /* Shortest of 15..17 significant digits that reads back to the same double. */
    char tmp[40];
    for (int prec = 15; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            return snprintf(buf, cap, "%s", tmp);
    }
    return snprintf(buf, cap, "%.17g", v);
}

/* ------------------------------------------------------------------------------------ */
/* validation                                                                           */

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s || (s[0] == '_' && s[1] == '_'))
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Counts a NULL-terminated list, looking at no more than max + 1 entries. */
static size_t list_len(const char *const *list, size_t max)
{
    size_t n = 0;
    if (list)
        while (n <= max && list[n])
            n++;
    return n;
}

/* ------------------------------------------------------------------------------------ */
/* children                                                                             */

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a, the NUL of each value included */
    for (size_t i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)values[i];
        do {
            h ^= *s;
            h *= 1099511628211u;
        } while (*s++);
    }
    return h;
}

static void metric_free(fw_metric *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < FW_METRICS_MAX_LABELS; i++)
        free(m->values[i]);
    free(m->labels);
    free(m);
}

/* A new child of fam with these values (fam->nlabels of them), not yet linked. */
static fw_metric *metric_new(const fw_metric_family *fam, const char *const *values, uint64_t hash)
{
    size_t nb = fam->type == FW_METRIC_HISTOGRAM ? fam->nbounds + 1 : 0;
    fw_metric *m = calloc(1, sizeof *m + nb * sizeof m->buckets[0]);
    if (!m)
        return NULL;
    m->hash = hash;
    m->type = fam->type;
    m->nbounds = fam->nbounds;
    m->bounds = fam->bounds;
    atomic_init(&m->count, 0);
    atomic_init(&m->bits, double_to_bits(0.0));
    for (size_t i = 0; i < nb; i++)
        atomic_init(&m->buckets[i], 0);

    sbuf lb = {0};
    sb_puts(&lb, "");
    for (size_t i = 0; i < fam->nlabels; i++) {
        m->values[i] = strdup(values[i]);
        if (!m->values[i]) {
            free(lb.p);
            metric_free(m);
            return NULL;
        }
        if (i > 0)
            sb_putc(&lb, ',');
        sb_puts(&lb, fam->label_names[i]);
        sb_puts(&lb, "=\"");
        sb_escaped(&lb, values[i], true);
        sb_putc(&lb, '"');
    }
    if (lb.oom) {
        free(lb.p);
        metric_free(m);
        return NULL;
    }
    m->labels = lb.p;
    return m;
}

static fw_metric *find_locked(const fw_metric_family *fam, const char *const *values, uint64_t hash)
{
    if (!fam->table)
        return NULL;
    for (fw_metric *m = fam->table[hash & (fam->tsize - 1)]; m; m = m->hnext) {
        if (m->hash != hash)
            continue;
        size_t i = 0;
        while (i < fam->nlabels && strcmp(m->values[i], values[i]) == 0)
            i++;
        if (i == fam->nlabels)
            return m;
    }
    return NULL;
}

/* Links m into fam's list and index; fails (m untouched) only when the index cannot grow. */
static bool link_locked(fw_metric_family *fam, fw_metric *m)
{
    if (fam->count + 1 > fam->tsize) {
        size_t tsize = fam->tsize ? fam->tsize * 2 : 8;
        fw_metric **table = calloc(tsize, sizeof *table);
        if (!table)
            return false;
        for (fw_metric *c = fam->head; c; c = c->next) {
            size_t slot = c->hash & (tsize - 1);
            c->hnext = table[slot];
            table[slot] = c;
        }
        free(fam->table);
        fam->table = table;
        fam->tsize = tsize;
    }
    size_t slot = m->hash & (fam->tsize - 1);
    m->hnext = fam->table[slot];
    fam->table[slot] = m;
    if (fam->tail)
        fam->tail->next = m;
    else
        fam->head = m;
    fam->tail = m;
    fam->count++;
    return true;
}

/* Finds or (when allowed) creates a child; with read set, creates a callback child and fails
 * if one with these values exists. */
static fw_err family_child(fw_metric_family *fam, const char *const *values,
                           fw_metrics_read_fn read, void *user, fw_metric **out, fw_error *err)
{
    if (out)
        *out = NULL;
    if (!fam)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: no family");
    size_t n = list_len(values, fam->nlabels);
    if (n != fam->nlabels)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "metrics: %s takes %zu label values, got %s%zu", fam->name,
                            fam->nlabels, n > fam->nlabels ? "at least " : "", n);
    uint64_t hash = hash_values(values, n);

    fw_err rc = FW_OK;
    pthread_mutex_lock(&fam->mu);
    fw_metric *m = find_locked(fam, values, hash);
    if (m && read) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                          "metrics: %s already has a child with these label values", fam->name);
        m = NULL;
    } else if (!m) {
        m = metric_new(fam, values, hash);
        if (m) {
            m->read = read;
            m->user = user;
            if (!link_locked(fam, m)) {
                metric_free(m);
                m = NULL;
            }
        }
        if (!m)
            rc = fw_error_set(err, FW_ERR_NOMEM, "metrics: out of memory adding to %s", fam->name);
    }
    pthread_mutex_unlock(&fam->mu);
    if (out)
        *out = m;
    return rc;
}

fw_err fw_metric_family_child(fw_metric_family *fam, const char *const *label_values,
                              fw_metric **out, fw_error *err)
{
    return family_child(fam, label_values, NULL, NULL, out, err);
}

fw_metric *fw_metric_get(fw_metric_family *fam, const char *const *label_values)
{
    fw_metric *m = NULL;
    fw_error e;
    if (family_child(fam, label_values, NULL, NULL, &m, &e) != FW_OK)
        FW_WARN("metrics", "child_failed", "error=%s detail=\"%s\"", fw_err_name(e.code),
                e.message);
    return m;
}

fw_err fw_metrics_callback_child(fw_metric_family *fam, const char *const *label_values,
                                 fw_metrics_read_fn read, void *user, fw_metric **out,
                                 fw_error *err)
{
    if (out)
        *out = NULL;
    if (!fam || !read || fam->type == FW_METRIC_HISTOGRAM)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "metrics: a callback child needs a counter or gauge family and "
                            "a read function");
    return family_child(fam, label_values, read, user, out, err);
}

/* ------------------------------------------------------------------------------------ */
/* updates                                                                              */

void fw_counter_inc(fw_metric *m)
{
    if (m && m->type == FW_METRIC_COUNTER && !m->read)
        atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
}

void fw_counter_add(fw_metric *m, double amount)
{
    if (!m || m->type != FW_METRIC_COUNTER || m->read || !(amount >= 0))
        return;
    if (amount <= 9007199254740992.0 && amount == (double)(uint64_t)amount)
        atomic_fetch_add_explicit(&m->count, (uint64_t)amount, memory_order_relaxed);
    else
        atomic_add_double(&m->bits, amount);
}

void fw_gauge_set(fw_metric *m, double value)
{
    if (m && m->type == FW_METRIC_GAUGE && !m->read)
        atomic_store_explicit(&m->bits, double_to_bits(value), memory_order_relaxed);
}

void fw_gauge_add(fw_metric *m, double delta)
{
    if (m && m->type == FW_METRIC_GAUGE && !m->read)
        atomic_add_double(&m->bits, delta);
}

void fw_gauge_inc(fw_metric *m)
{
    fw_gauge_add(m, 1.0);
}

void fw_gauge_dec(fw_metric *m)
{
    fw_gauge_add(m, -1.0);
}

void fw_histogram_observe(fw_metric *m, double value)
{
    if (!m || m->type != FW_METRIC_HISTOGRAM)
        return;
    /* First bucket whose bound is >= value; NaN and values above every bound go to +Inf. */
    size_t lo = 0, hi = m->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (value <= m->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&m->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&m->bits, value);
}

double fw_metric_value(const fw_metric *m)
{
    if (!m)
        return 0.0;
    if (m->read)
        return m->read(m->user);
    switch (m->type) {
    case FW_METRIC_COUNTER:
        return (double)atomic_load_explicit((_Atomic uint64_t *)&m->count, memory_order_relaxed) +
               atomic_load_double(&m->bits);
    case FW_METRIC_GAUGE:
        return atomic_load_double(&m->bits);
    default:
        return 0.0;
    }
}

uint64_t fw_histogram_count(const fw_metric *m)
{
    uint64_t n = 0;
    if (m && m->type == FW_METRIC_HISTOGRAM)
        for (size_t i = 0; i <= m->nbounds; i++)
            n += atomic_load_explicit((_Atomic uint64_t *)&m->buckets[i], memory_order_relaxed);
    return n;
}

double fw_histogram_sum(const fw_metric *m)
{
    if (!m || m->type != FW_METRIC_HISTOGRAM)
        return 0.0;
    return atomic_load_double(&m->bits);
}

/* ------------------------------------------------------------------------------------ */
/* registry                                                                             */

fw_err fw_metrics_new(fw_metrics **out, fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: out is NULL");
    *out = NULL;
    fw_metrics *reg = calloc(1, sizeof *reg);
    if (!reg)
        return fw_error_set(err, FW_ERR_NOMEM, "metrics: out of memory");
    if (pthread_mutex_init(&reg->mu, NULL) != 0) {
        free(reg);
        return fw_error_set(err, FW_ERR_INTERNAL, "metrics: pthread_mutex_init failed");
    }
    *out = reg;
    return FW_OK;
}

static void family_free(fw_metric_family *fam)
{
    if (!fam)
        return;
    fw_metric *m = fam->head;
    while (m) {
        fw_metric *next = m->next;
        metric_free(m);
        m = next;
    }
    free(fam->table);
    free(fam->name);
    free(fam->help);
    for (size_t i = 0; i < FW_METRICS_MAX_LABELS; i++)
        free(fam->label_names[i]);
    free(fam->bounds);
    pthread_mutex_destroy(&fam->mu);
    free(fam);
}

void fw_metrics_free(fw_metrics *reg)
{
    if (!reg)
        return;
    fw_metric_family *fam = reg->head;
    while (fam) {
        fw_metric_family *next = fam->next;
        family_free(fam);
        fam = next;
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* Builds an unlinked family after validating its definition. */
static fw_err family_new(fw_metric_type type, const char *name, const char *help,
                         const char *const *label_names, const double *bounds, size_t nbounds,
                         fw_metric_family **out, fw_error *err)
{
    *out = NULL;
    if (!valid_metric_name(name))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: invalid metric name '%s'",
                            name ? name : "(null)");
    if (!help)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: %s has no help text", name);
    size_t nlabels = list_len(label_names, FW_METRICS_MAX_LABELS);
    if (nlabels > FW_METRICS_MAX_LABELS)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "metrics: %s has more than %d label names", name,
                            FW_METRICS_MAX_LABELS);
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_label_name(label_names[i]))
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "metrics: %s: invalid label name '%s'", name, label_names[i]);
        if (type == FW_METRIC_HISTOGRAM && strcmp(label_names[i], "le") == 0)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "metrics: %s: a histogram may not have a label 'le'", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(label_names[i], label_names[j]) == 0)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                    "metrics: %s: label name '%s' repeated", name, label_names[i]);
    }
    if (type == FW_METRIC_HISTOGRAM) {
        if (nbounds > 0 && !bounds)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: %s: bounds is NULL", name);
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                    "metrics: %s: bucket bounds must be finite and strictly "
                                    "increasing",
                                    name);
    }

    fw_metric_family *fam = calloc(1, sizeof *fam);
    if (!fam)
        return fw_error_set(err, FW_ERR_NOMEM, "metrics: out of memory");
    if (pthread_mutex_init(&fam->mu, NULL) != 0) {
        free(fam);
        return fw_error_set(err, FW_ERR_INTERNAL, "metrics: pthread_mutex_init failed");
    }
    fam->type = type;
    fam->nlabels = nlabels;
    fam->name = strdup(name);
    fam->help = strdup(help);
    bool ok = fam->name && fam->help;
    for (size_t i = 0; ok && i < nlabels; i++)
        ok = (fam->label_names[i] = strdup(label_names[i])) != NULL;
    if (ok && type == FW_METRIC_HISTOGRAM && nbounds > 0) {
        fam->bounds = malloc(nbounds * sizeof *fam->bounds);
        ok = fam->bounds != NULL;
        if (ok) {
            memcpy(fam->bounds, bounds, nbounds * sizeof *fam->bounds);
            fam->nbounds = nbounds;
        }
    }
    if (!ok) {
        family_free(fam);
        return fw_error_set(err, FW_ERR_NOMEM, "metrics: out of memory");
    }
    *out = fam;
    return FW_OK;
}

/* Appends fam to the registry unless its name is taken; frees it on failure. */
static fw_err family_publish(fw_metrics *reg, fw_metric_family *fam, fw_metric_family **out,
                             fw_error *err)
{
    fw_err rc = FW_OK;
    pthread_mutex_lock(&reg->mu);
    for (fw_metric_family *f = reg->head; f; f = f->next)
        if (strcmp(f->name, fam->name) == 0) {
            rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: %s is already registered",
                              fam->name);
            break;
        }
    if (rc == FW_OK) {
        if (reg->tail)
            reg->tail->next = fam;
        else
            reg->head = fam;
        reg->tail = fam;
        reg->count++;
    }
    pthread_mutex_unlock(&reg->mu);
    if (rc != FW_OK) {
        family_free(fam);
        fam = NULL;
    }
    if (out)
        *out = fam;
    return rc;
}

static fw_err register_family(fw_metrics *reg, fw_metric_type type, const char *name,
                              const char *help, const char *const *label_names,
                              const double *bounds, size_t nbounds, fw_metrics_read_fn read,
                              void *user, fw_metric_family **out, fw_error *err)
{
    if (out)
        *out = NULL;
    if (!reg)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: no registry");
    fw_metric_family *fam;
    fw_err rc = family_new(type, name, help, label_names, bounds, nbounds, &fam, err);
    if (rc != FW_OK)
        return rc;
    /* An unlabelled family exists as one sample from the start. */
    if (fam->nlabels == 0) {
        rc = family_child(fam, NULL, read, user, NULL, err);
        if (rc != FW_OK) {
            family_free(fam);
            return rc;
        }
    }
    return family_publish(reg, fam, out, err);
}

fw_err fw_metrics_counter(fw_metrics *reg, const char *name, const char *help,
                          const char *const *label_names, fw_metric_family **out, fw_error *err)
{
    return register_family(reg, FW_METRIC_COUNTER, name, help, label_names, NULL, 0, NULL, NULL,
                           out, err);
}

fw_err fw_metrics_gauge(fw_metrics *reg, const char *name, const char *help,
                        const char *const *label_names, fw_metric_family **out, fw_error *err)
{
    return register_family(reg, FW_METRIC_GAUGE, name, help, label_names, NULL, 0, NULL, NULL, out,
                           err);
}

fw_err fw_metrics_histogram(fw_metrics *reg, const char *name, const char *help,
                            const char *const *label_names, const double *bounds, size_t nbounds,
                            fw_metric_family **out, fw_error *err)
{
    return register_family(reg, FW_METRIC_HISTOGRAM, name, help, label_names, bounds, nbounds, NULL,
                           NULL, out, err);
}

fw_err fw_metrics_callback(fw_metrics *reg, fw_metric_type type, const char *name, const char *help,
                           fw_metrics_read_fn read, void *user, fw_metric_family **out,
                           fw_error *err)
{
    if (out)
        *out = NULL;
    if (!read || (type != FW_METRIC_COUNTER && type != FW_METRIC_GAUGE))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "metrics: a callback metric is a counter or a gauge with a read "
                            "function");
    return register_family(reg, type, name, help, NULL, NULL, 0, read, user, out, err);
}

/* ------------------------------------------------------------------------------------ */
/* rendering                                                                            */

static const char *type_name(fw_metric_type t)
{
    switch (t) {
    case FW_METRIC_COUNTER:
        return "counter";
    case FW_METRIC_GAUGE:
        return "gauge";
    default:
        return "histogram";
    }
}

/* name[suffix]{labels[,le="bound"]} value\n */
static void render_sample(sbuf *b, const char *name, const char *suffix, const char *labels,
                          const char *le, double value)
{
    sb_puts(b, name);
    sb_puts(b, suffix);
    if (*labels || le) {
        sb_putc(b, '{');
        sb_puts(b, labels);
        if (le) {
            if (*labels)
                sb_putc(b, ',');
            sb_puts(b, "le=\"");
            sb_puts(b, le);
            sb_putc(b, '"');
        }
        sb_putc(b, '}');
    }
    sb_putc(b, ' ');
    sb_value(b, value);
    sb_putc(b, '\n');
}

static void render_histogram(sbuf *b, const char *name, const fw_metric *m)
{
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= m->nbounds; i++) {
        cum += atomic_load_explicit((_Atomic uint64_t *)&m->buckets[i], memory_order_relaxed);
        if (i < m->nbounds)
            fw_metrics_format_value(m->bounds[i], le, sizeof le);
        else
            snprintf(le, sizeof le, "+Inf");
        render_sample(b, name, "_bucket", m->labels, le, (double)cum);
    }
    render_sample(b, name, "_sum", m->labels, NULL, atomic_load_double(&m->bits));
    render_sample(b, name, "_count", m->labels, NULL, (double)cum);
}

static void render_family(sbuf *b, fw_metric_family *fam)
{
    sb_puts(b, "# HELP ");
    sb_puts(b, fam->name);
    if (*fam->help) {
        sb_putc(b, ' ');
        sb_escaped(b, fam->help, false);
    }
    sb_puts(b, "\n# TYPE ");
    sb_puts(b, fam->name);
    sb_putc(b, ' ');
    sb_puts(b, type_name(fam->type));
    sb_putc(b, '\n');

    pthread_mutex_lock(&fam->mu);
    fw_metric *m = fam->head;
    size_t n = fam->count;
    pthread_mutex_unlock(&fam->mu);
    for (size_t i = 0; i < n; i++) {
        if (fam->type == FW_METRIC_HISTOGRAM)
            render_histogram(b, fam->name, m);
        else
            render_sample(b, fam->name, "", m->labels, NULL, fw_metric_value(m));
        if (i + 1 < n) /* the last node's next may be changing under another thread */
            m = m->next;
    }
}

fw_err fw_metrics_render(fw_metrics *reg, char **out, size_t *out_len, fw_error *err)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!reg || !out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "metrics: no registry or output");

    pthread_mutex_lock(&reg->mu);
    fw_metric_family *fam = reg->head;
    size_t n = reg->count;
    pthread_mutex_unlock(&reg->mu);

    sbuf b = {0};
    sb_puts(&b, "");
    for (size_t i = 0; i < n && !b.oom; i++) {
        render_family(&b, fam);
        if (i + 1 < n)
            fam = fam->next;
    }
    if (b.oom) {
        free(b.p);
        return fw_error_set(err, FW_ERR_NOMEM, "metrics: out of memory rendering");
    }
    *out = b.p;
    if (out_len)
        *out_len = b.len;
    return FW_OK;
}
