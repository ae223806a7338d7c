/* Unit tests for the Prometheus metrics registry: exact exposition text (hand-written
 * expectations), value formatting, escaping, callbacks, argument checking, and exact totals
 * under concurrent updates, child creation and rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/metrics.h"

#define NTHREADS 8
#define NITER 100000

/* Renders reg and compares with the expected text, printing both on a mismatch. */
static void assert_render(fw_metrics *reg, const char *expected)
{
    char *text = NULL;
    size_t len = 0;
    fw_error err;
    assert_int_equal(fw_metrics_render(reg, &text, &len, &err), FW_OK);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    if (strcmp(text, expected) != 0)
        print_error("--- expected\n%s--- got\n%s---\n", expected, text);
    assert_string_equal(text, expected);
    free(text);
}

/* The value of the sample line starting with `prefix ` in reg's rendering. */
static double sample_value(fw_metrics *reg, const char *prefix)
{
    char *text = NULL;
    assert_int_equal(fw_metrics_render(reg, &text, NULL, NULL), FW_OK);
    size_t n = strlen(prefix);
    const char *line = text;
    double v = NAN;
    bool found = false;
    while (line && *line) {
        if (strncmp(line, prefix, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            found = true;
            break;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    if (!found)
        print_error("no sample '%s' in:\n%s", prefix, text);
    free(text);
    assert_true(found);
    return v;
}

/* ------------------------------------------------------------------------------------ */

static void test_exposition_text(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    fw_error err;
    assert_int_equal(fw_metrics_new(&reg, &err), FW_OK);

    fw_metric_family *req, *depth, *lat, *batch, *esc, *empty;
    assert_int_equal(fw_metrics_counter(reg, "fw_requests_total", "Requests answered.",
                                        FW_LABELS("route", "status"), &req, &err),
                     FW_OK);
    assert_int_equal(fw_metrics_gauge(reg, "fw_queue_depth",
                                      "Items waiting.\nSecond line, a back\\slash.", NULL, &depth,
                                      &err),
                     FW_OK);
    const double lat_bounds[] = {0.1, 0.25, 0.5, 1, 2.5};
    assert_int_equal(fw_metrics_histogram(reg, "fw_latency_seconds", "Request latency.", NULL,
                                          lat_bounds, 5, &lat, &err),
                     FW_OK);
    const double batch_bounds[] = {1, 8};
    assert_int_equal(fw_metrics_histogram(reg, "fw_batch_size", "Items per batch.",
                                          FW_LABELS("model"), batch_bounds, 2, &batch, &err),
                     FW_OK);
    assert_int_equal(fw_metrics_gauge(reg, "fw_escape", "", FW_LABELS("v"), &esc, &err), FW_OK);
    assert_int_equal(
        fw_metrics_counter(reg, "fw_empty_total", "Nothing yet.", FW_LABELS("x"), &empty, &err),
        FW_OK);

    fw_metric *ok = fw_metric_get(req, FW_LABELS("/v1/analyze", "200"));
    fw_metric *bad = fw_metric_get(req, FW_LABELS("/v1/detect", "400"));
    assert_non_null(ok);
    assert_non_null(bad);
    assert_ptr_not_equal(ok, bad);
    fw_counter_inc(ok);
    fw_counter_inc(ok);
    fw_counter_add(bad, 1);
    /* Looking the same values up again yields the same child. */
    fw_metric *again = NULL;
    assert_int_equal(fw_metric_family_child(req, FW_LABELS("/v1/analyze", "200"), &again, &err),
                     FW_OK);
    assert_ptr_equal(again, ok);
    fw_counter_inc(again);

    fw_gauge_set(fw_metric_get(depth, NULL), 7);
    fw_gauge_add(fw_metric_get(depth, NULL), -9.5);

    /* Observations on bucket edges land in that bucket (le is inclusive). */
    fw_metric *l = fw_metric_get(lat, NULL);
    const double obs[] = {0.25, 0.125, 0.5, 1, 0.75, 3};
    for (size_t i = 0; i < 6; i++)
        fw_histogram_observe(l, obs[i]);
    fw_metric *b = fw_metric_get(batch, FW_LABELS("det"));
    fw_histogram_observe(b, 1);
    fw_histogram_observe(b, 8);
    fw_histogram_observe(b, 9);

    fw_gauge_set(fw_metric_get(esc, FW_LABELS("a\\b\"c\nd")), 1);

    assert_render(reg, "# HELP fw_requests_total Requests answered.\n"
                       "# TYPE fw_requests_total counter\n"
                       "fw_requests_total{route=\"/v1/analyze\",status=\"200\"} 3\n"
                       "fw_requests_total{route=\"/v1/detect\",status=\"400\"} 1\n"
                       "# HELP fw_queue_depth Items waiting.\\nSecond line, a back\\\\slash.\n"
                       "# TYPE fw_queue_depth gauge\n"
                       "fw_queue_depth -2.5\n"
                       "# HELP fw_latency_seconds Request latency.\n"
                       "# TYPE fw_latency_seconds histogram\n"
                       "fw_latency_seconds_bucket{le=\"0.1\"} 0\n"
                       "fw_latency_seconds_bucket{le=\"0.25\"} 2\n"
                       "fw_latency_seconds_bucket{le=\"0.5\"} 3\n"
                       "fw_latency_seconds_bucket{le=\"1\"} 5\n"
                       "fw_latency_seconds_bucket{le=\"2.5\"} 5\n"
                       "fw_latency_seconds_bucket{le=\"+Inf\"} 6\n"
                       "fw_latency_seconds_sum 5.625\n"
                       "fw_latency_seconds_count 6\n"
                       "# HELP fw_batch_size Items per batch.\n"
                       "# TYPE fw_batch_size histogram\n"
                       "fw_batch_size_bucket{model=\"det\",le=\"1\"} 1\n"
                       "fw_batch_size_bucket{model=\"det\",le=\"8\"} 2\n"
                       "fw_batch_size_bucket{model=\"det\",le=\"+Inf\"} 3\n"
                       "fw_batch_size_sum{model=\"det\"} 18\n"
                       "fw_batch_size_count{model=\"det\"} 3\n"
                       "# HELP fw_escape\n"
                       "# TYPE fw_escape gauge\n"
                       "fw_escape{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                       "# HELP fw_empty_total Nothing yet.\n"
                       "# TYPE fw_empty_total counter\n");

    assert_int_equal(fw_histogram_count(l), 6);
    assert_true(fw_histogram_sum(l) == 5.625);
    assert_true(fw_metric_value(ok) == 3);
    assert_true(fw_metric_value(fw_metric_get(depth, NULL)) == -2.5);
    fw_metrics_free(reg);
}

static void test_empty_registry_and_histogram(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    assert_render(reg, "");

    /* A histogram without bounds has only the +Inf bucket; NaN and huge values go there. */
    fw_metric_family *h;
    assert_int_equal(fw_metrics_histogram(reg, "h", "x", NULL, NULL, 0, &h, NULL), FW_OK);
    assert_render(reg, "# HELP h x\n# TYPE h histogram\n"
                       "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
    fw_histogram_observe(fw_metric_get(h, NULL), 1e300);
    fw_histogram_observe(fw_metric_get(h, NULL), -2);
    assert_render(reg, "# HELP h x\n# TYPE h histogram\n"
                       "h_bucket{le=\"+Inf\"} 2\nh_sum 1e+300\nh_count 2\n");
    fw_metrics_free(reg);
}

static void test_format_value(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *s;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {1, "1"},
        {-3, "-3"},
        {42, "42"},
        {1e15, "1000000000000000"},
        {123456789012, "123456789012"},
        {9007199254740993.0, "9007199254740992"},
        {9223372036854775808.0, "9.223372036854776e+18"},
        {0.1, "0.1"},
        {1.5, "1.5"},
        {-2.5, "-2.5"},
        {0.005, "0.005"},
        {1e-7, "1e-07"},
        {1.0 / 3.0, "0.3333333333333333"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1e300, "1e+300"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        int n = fw_metrics_format_value(cases[i].v, buf, sizeof buf);
        assert_string_equal(buf, cases[i].s);
        assert_int_equal(n, (int)strlen(cases[i].s));
    }
    /* Truncation reports the full length, as snprintf does. */
    char small[4];
    assert_int_equal(fw_metrics_format_value(123456, small, sizeof small), 6);
    assert_string_equal(small, "123");
}

static void test_counter_and_gauge_updates(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    fw_metric_family *c, *g;
    assert_int_equal(fw_metrics_counter(reg, "c_total", "c", NULL, &c, NULL), FW_OK);
    assert_int_equal(fw_metrics_gauge(reg, "g", "g", NULL, &g, NULL), FW_OK);
    fw_metric *cm = fw_metric_get(c, NULL), *gm = fw_metric_get(g, NULL);

    fw_counter_inc(cm);
    fw_counter_add(cm, 2);
    fw_counter_add(cm, 0.25);
    fw_counter_add(cm, -5);  /* ignored: counters never go down */
    fw_counter_add(cm, NAN); /* ignored */
    fw_gauge_set(cm, 100);   /* ignored: not a gauge */
    fw_histogram_observe(cm, 1);
    assert_true(fw_metric_value(cm) == 3.25);

    fw_gauge_set(gm, 10);
    fw_gauge_inc(gm);
    fw_gauge_dec(gm);
    fw_gauge_dec(gm);
    fw_gauge_add(gm, 0.5);
    fw_counter_inc(gm); /* ignored: not a counter */
    assert_true(fw_metric_value(gm) == 9.5);
    assert_int_equal(fw_histogram_count(gm), 0);

    /* NULL children are accepted everywhere. */
    fw_counter_inc(NULL);
    fw_counter_add(NULL, 1);
    fw_gauge_set(NULL, 1);
    fw_gauge_add(NULL, 1);
    fw_gauge_inc(NULL);
    fw_gauge_dec(NULL);
    fw_histogram_observe(NULL, 1);
    assert_true(fw_metric_value(NULL) == 0);
    assert_int_equal(fw_histogram_count(NULL), 0);
    assert_true(fw_histogram_sum(NULL) == 0);

    assert_render(reg, "# HELP c_total c\n# TYPE c_total counter\nc_total 3.25\n"
                       "# HELP g g\n# TYPE g gauge\ng 9.5\n");
    fw_metrics_free(reg);
    fw_metrics_free(NULL);
}

/* ------------------------------------------------------------------------------------ */
/* callbacks                                                                            */

static _Atomic int queue_depth;
static _Atomic int reads;

static double read_queue(void *user)
{
    assert_ptr_equal(user, &queue_depth);
    atomic_fetch_add(&reads, 1);
    return atomic_load(&queue_depth);
}

static double read_one(void *user)
{
    (void)user;
    return 1;
}

static double read_double(void *user)
{
    return *(const double *)user;
}

static void test_callbacks(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    fw_error err;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    atomic_store(&queue_depth, 5);
    atomic_store(&reads, 0);

    fw_metric_family *q, *info, *bytes;
    assert_int_equal(fw_metrics_callback(reg, FW_METRIC_GAUGE, "fw_queue_depth", "Queued.",
                                         read_queue, &queue_depth, &q, &err),
                     FW_OK);
    assert_int_equal(fw_metrics_gauge(reg, "fw_provider_info", "Active provider.",
                                      FW_LABELS("provider"), &info, &err),
                     FW_OK);
    fw_metric *cpu = NULL;
    assert_int_equal(fw_metrics_callback_child(info, FW_LABELS("cpu"), read_one, NULL, &cpu, &err),
                     FW_OK);
    assert_non_null(cpu);
    /* A second child with the same values is refused; other values are fine. */
    assert_int_equal(fw_metrics_callback_child(info, FW_LABELS("cpu"), read_one, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    double total = 1.5;
    assert_int_equal(fw_metrics_callback(reg, FW_METRIC_COUNTER, "fw_bytes_total", "Bytes.",
                                         read_double, &total, &bytes, &err),
                     FW_OK);

    /* Updates on callback children are ignored. */
    fw_gauge_set(fw_metric_get(q, NULL), 100);
    fw_counter_inc(fw_metric_get(bytes, NULL));
    fw_gauge_set(cpu, 3);

    const char *expect5 = "# HELP fw_queue_depth Queued.\n# TYPE fw_queue_depth gauge\n"
                          "fw_queue_depth 5\n"
                          "# HELP fw_provider_info Active provider.\n"
                          "# TYPE fw_provider_info gauge\n"
                          "fw_provider_info{provider=\"cpu\"} 1\n"
                          "# HELP fw_bytes_total Bytes.\n# TYPE fw_bytes_total counter\n"
                          "fw_bytes_total 1.5\n";
    assert_render(reg, expect5);
    assert_int_equal(atomic_load(&reads), 1);

    /* Values are read at every render. */
    atomic_store(&queue_depth, 12);
    total = 1e9;
    assert_true(sample_value(reg, "fw_queue_depth") == 12);
    assert_true(sample_value(reg, "fw_bytes_total") == 1e9);
    assert_true(fw_metric_value(fw_metric_get(q, NULL)) == 12);

    /* Callbacks only for counters and gauges, and only with a function. */
    fw_metric_family *h;
    const double bounds[] = {1};
    assert_int_equal(fw_metrics_histogram(reg, "fw_h", "h", FW_LABELS("a"), bounds, 1, &h, NULL),
                     FW_OK);
    assert_int_equal(fw_metrics_callback_child(h, FW_LABELS("x"), read_one, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_callback_child(info, FW_LABELS("gpu"), NULL, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(
        fw_metrics_callback(reg, FW_METRIC_HISTOGRAM, "fw_x", "x", read_one, NULL, NULL, &err),
        FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_callback(reg, FW_METRIC_GAUGE, "fw_y", "y", NULL, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    /* An unlabelled plain family already has its child: no callback child can be added. */
    fw_metric_family *plain;
    assert_int_equal(fw_metrics_gauge(reg, "fw_plain", "p", NULL, &plain, NULL), FW_OK);
    assert_int_equal(fw_metrics_callback_child(plain, NULL, read_one, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    fw_metrics_free(reg);
}

/* ------------------------------------------------------------------------------------ */
/* argument checking                                                                    */

static void test_invalid_definitions(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    fw_error err;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    fw_metric_family *f = (fw_metric_family *)&err; /* must be reset to NULL on failure */
    const double good[] = {1, 2};

    const char *bad_names[] = {"", "1abc", "a-b", "a b", "é"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_int_equal(fw_metrics_counter(reg, bad_names[i], "h", NULL, &f, &err),
                         FW_ERR_INVALID_ARGUMENT);
        assert_null(f);
    }
    assert_int_equal(fw_metrics_counter(reg, NULL, "h", NULL, &f, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_counter(reg, "ok", NULL, NULL, &f, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_counter(NULL, "ok", "h", NULL, &f, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(
        fw_metrics_counter(reg, "ok", "h", FW_LABELS("a", "b", "c", "d", "e"), &f, &err),
        FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_counter(reg, "ok", "h", FW_LABELS("__reserved"), &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_counter(reg, "ok", "h", FW_LABELS("a:b"), &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_counter(reg, "ok", "h", FW_LABELS("a", "a"), &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_histogram(reg, "ok", "h", FW_LABELS("le"), good, 2, &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    const double unsorted[] = {1, 1}, nan_bound[] = {1, NAN}, inf_bound[] = {INFINITY};
    assert_int_equal(fw_metrics_histogram(reg, "ok", "h", NULL, unsorted, 2, &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_histogram(reg, "ok", "h", NULL, nan_bound, 2, &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_histogram(reg, "ok", "h", NULL, inf_bound, 1, &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metrics_histogram(reg, "ok", "h", NULL, NULL, 2, &f, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_null(f);
    /* Nothing was registered by the failures. */
    assert_render(reg, "");

    /* Four labels is the limit; names are unique across types. */
    assert_int_equal(
        fw_metrics_gauge(reg, "ok:name_1", "h", FW_LABELS("a", "b", "c", "d_1"), &f, &err), FW_OK);
    assert_non_null(f);
    fw_metric_family *dup = (fw_metric_family *)&err;
    assert_int_equal(fw_metrics_counter(reg, "ok:name_1", "h", NULL, &dup, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_null(dup);
    assert_non_null(strstr(err.message, "already registered"));

    /* Label values: exactly as many as label names. */
    fw_metric *m = (fw_metric *)&err;
    assert_int_equal(fw_metric_family_child(f, FW_LABELS("1", "2", "3"), &m, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_null(m);
    assert_int_equal(fw_metric_family_child(f, FW_LABELS("1", "2", "3", "4", "5"), &m, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metric_family_child(f, NULL, &m, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_metric_family_child(NULL, NULL, &m, &err), FW_ERR_INVALID_ARGUMENT);
    assert_null(fw_metric_get(f, FW_LABELS("only one")));
    fw_metric_family *unl;
    assert_int_equal(fw_metrics_counter(reg, "unl_total", "h", NULL, &unl, NULL), FW_OK);
    assert_null(fw_metric_get(unl, FW_LABELS("x")));
    assert_non_null(fw_metric_get(unl, NULL));

    /* Empty label values are values like any other. */
    assert_int_equal(fw_metric_family_child(f, FW_LABELS("", "", "", ""), &m, &err), FW_OK);
    fw_gauge_set(m, 2);
    assert_render(reg, "# HELP ok:name_1 h\n# TYPE ok:name_1 gauge\n"
                       "ok:name_1{a=\"\",b=\"\",c=\"\",d_1=\"\"} 2\n"
                       "# HELP unl_total h\n# TYPE unl_total counter\nunl_total 0\n");

    char *text = (char *)&err;
    assert_int_equal(fw_metrics_render(NULL, &text, NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_null(text);
    assert_int_equal(fw_metrics_new(NULL, &err), FW_ERR_INVALID_ARGUMENT);
    fw_metrics_free(reg);
}

/* Many children: the hash index grows and every lookup still finds its own child. */
static void test_many_children(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    fw_metric_family *f;
    assert_int_equal(fw_metrics_counter(reg, "n_total", "h", FW_LABELS("a", "b"), &f, NULL), FW_OK);
    enum { N = 300 };
    fw_metric *kids[N];
    for (int i = 0; i < N; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", i / 10);
        snprintf(b, sizeof b, "%d", i % 10);
        kids[i] = fw_metric_get(f, FW_LABELS(a, b));
        assert_non_null(kids[i]);
        fw_counter_add(kids[i], i);
    }
    for (int i = 0; i < N; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", i / 10);
        snprintf(b, sizeof b, "%d", i % 10);
        assert_ptr_equal(fw_metric_get(f, FW_LABELS(a, b)), kids[i]);
        assert_true(fw_metric_value(kids[i]) == i);
    }
    /* "1","23" and "12","3" are different children although their concatenation is equal. */
    assert_ptr_not_equal(fw_metric_get(f, FW_LABELS("1", "23")),
                         fw_metric_get(f, FW_LABELS("12", "3")));
    /* Creation order is rendering order. */
    assert_true(sample_value(reg, "n_total{a=\"0\",b=\"0\"}") == 0);
    assert_true(sample_value(reg, "n_total{a=\"29\",b=\"9\"}") == 299);
    char *text = NULL;
    assert_int_equal(fw_metrics_render(reg, &text, NULL, NULL), FW_OK);
    const char *p0 = strstr(text, "{a=\"0\",b=\"1\"}"), *p1 = strstr(text, "{a=\"0\",b=\"2\"}");
    assert_non_null(p0);
    assert_non_null(p1);
    assert_true(p0 < p1);
    free(text);
    fw_metrics_free(reg);
}

/* ------------------------------------------------------------------------------------ */
/* concurrency                                                                          */

typedef struct shared {
    fw_metric_family *req, *hist;
    fw_metric *counter, *frac, *gauge, *histc;
    _Atomic int stop;
    fw_metric *seen_common[NTHREADS];
} shared;

typedef struct targ {
    shared *s;
    int id;
} targ;

static void *hammer(void *p)
{
    targ *a = p;
    shared *s = a->s;
    static const double values[4] = {0.25, 0.5, 1, 3};
    for (int i = 0; i < NITER; i++) {
        fw_counter_inc(s->counter);
        fw_counter_add(s->frac, 0.25);
        fw_gauge_add(s->gauge, (i & 1) ? -0.5 : 1.5);
        fw_histogram_observe(s->histc, values[i & 3]);
    }
    return NULL;
}

static void *creator(void *p)
{
    targ *a = p;
    shared *s = a->s;
    char own[16];
    snprintf(own, sizeof own, "t%d", a->id);
    for (int i = 0; i < 2000; i++) {
        fw_metric *common = fw_metric_get(s->req, FW_LABELS("common", "200"));
        fw_metric *mine = fw_metric_get(s->req, FW_LABELS(own, "200"));
        char status[16];
        snprintf(status, sizeof status, "%d", i % 5);
        fw_metric *spread = fw_metric_get(s->req, FW_LABELS("spread", status));
        if (!common || !mine || !spread)
            return (void *)1;
        if (i == 0)
            s->seen_common[a->id] = common;
        else if (common != s->seen_common[a->id])
            return (void *)2;
        fw_counter_inc(common);
        fw_counter_inc(mine);
        fw_counter_inc(spread);
    }
    return NULL;
}

/* Reads the counter while the other threads work: it only goes up. */
static void *reader(void *p)
{
    shared *s = p;
    double last = -1;
    uintptr_t bad = 0;
    while (!atomic_load(&s->stop)) {
        double v = fw_metric_value(s->counter);
        if (v < last)
            bad = 4;
        last = v;
    }
    return (void *)bad;
}

typedef struct render_arg {
    fw_metrics *reg;
    shared *s;
    long renders;
} render_arg;

static void *render_loop(void *p)
{
    render_arg *r = p;
    uintptr_t bad = 0;
    while (!atomic_load(&r->s->stop)) {
        char *text = NULL;
        if (fw_metrics_render(r->reg, &text, NULL, NULL) != FW_OK || !text) {
            bad = 5;
            break;
        }
        /* Every histogram rendering is self-consistent: _count equals the +Inf bucket. */
        const char *inf = strstr(text, "conc_hist_bucket{le=\"+Inf\"} ");
        const char *cnt = strstr(text, "conc_hist_count ");
        if (!inf || !cnt ||
            strtoull(inf + strlen("conc_hist_bucket{le=\"+Inf\"} "), NULL, 10) !=
                strtoull(cnt + strlen("conc_hist_count "), NULL, 10))
            bad = 6;
        free(text);
        r->renders++;
    }
    return (void *)bad;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    shared s = {0};
    fw_metric_family *c, *fr, *g;
    const double bounds[] = {0.25, 0.5, 1, 2.5};
    assert_int_equal(fw_metrics_counter(reg, "conc_total", "c", NULL, &c, NULL), FW_OK);
    assert_int_equal(fw_metrics_counter(reg, "conc_frac_total", "c", NULL, &fr, NULL), FW_OK);
    assert_int_equal(fw_metrics_gauge(reg, "conc_gauge", "g", NULL, &g, NULL), FW_OK);
    assert_int_equal(fw_metrics_histogram(reg, "conc_hist", "h", NULL, bounds, 4, &s.hist, NULL),
                     FW_OK);
    s.counter = fw_metric_get(c, NULL);
    s.frac = fw_metric_get(fr, NULL);
    s.gauge = fw_metric_get(g, NULL);
    s.histc = fw_metric_get(s.hist, NULL);

    pthread_t th[NTHREADS], rt, rt2;
    targ args[NTHREADS];
    render_arg ra = {reg, &s, 0};
    assert_int_equal(pthread_create(&rt, NULL, render_loop, &ra), 0);
    assert_int_equal(pthread_create(&rt2, NULL, reader, &s), 0);
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (targ){&s, i};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    atomic_store(&s.stop, 1);
    void *r1, *r2;
    assert_int_equal(pthread_join(rt, &r1), 0);
    assert_int_equal(pthread_join(rt2, &r2), 0);
    assert_null(r1);
    assert_null(r2);
    assert_true(ra.renders > 0);

    /* 8 x 100000 = 800000 increments; 800000 x 0.25; 400000 x (1.5 - 0.5); each of the four
     * values observed 200000 times. Every partial sum is exact in binary. */
    assert_true(fw_metric_value(s.counter) == 800000);
    assert_true(fw_metric_value(s.frac) == 200000);
    assert_true(fw_metric_value(s.gauge) == 400000);
    assert_int_equal(fw_histogram_count(s.histc), 800000);
    assert_true(fw_histogram_sum(s.histc) == 200000 * (0.25 + 0.5 + 1 + 3));
    assert_render(reg, "# HELP conc_total c\n# TYPE conc_total counter\n"
                       "conc_total 800000\n"
                       "# HELP conc_frac_total c\n# TYPE conc_frac_total counter\n"
                       "conc_frac_total 200000\n"
                       "# HELP conc_gauge g\n# TYPE conc_gauge gauge\n"
                       "conc_gauge 400000\n"
                       "# HELP conc_hist h\n# TYPE conc_hist histogram\n"
                       "conc_hist_bucket{le=\"0.25\"} 200000\n"
                       "conc_hist_bucket{le=\"0.5\"} 400000\n"
                       "conc_hist_bucket{le=\"1\"} 600000\n"
                       "conc_hist_bucket{le=\"2.5\"} 600000\n"
                       "conc_hist_bucket{le=\"+Inf\"} 800000\n"
                       "conc_hist_sum 950000\n"
                       "conc_hist_count 800000\n");
    fw_metrics_free(reg);
}

static void *registerer(void *p)
{
    render_arg *r = p;
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "late_%d", i);
        fw_metric_family *f;
        if (fw_metrics_gauge(r->reg, name, "late", NULL, &f, NULL) != FW_OK)
            return (void *)7;
        fw_gauge_set(fw_metric_get(f, NULL), i);
    }
    return NULL;
}

static void test_concurrent_children(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    shared s = {0};
    assert_int_equal(
        fw_metrics_counter(reg, "req_total", "r", FW_LABELS("route", "status"), &s.req, NULL),
        FW_OK);
    const double bounds[] = {1};
    assert_int_equal(fw_metrics_histogram(reg, "conc_hist", "h", NULL, bounds, 1, &s.hist, NULL),
                     FW_OK);

    pthread_t th[NTHREADS], rt, reg_t;
    targ args[NTHREADS];
    render_arg ra = {reg, &s, 0};
    assert_int_equal(pthread_create(&rt, NULL, render_loop, &ra), 0);
    assert_int_equal(pthread_create(&reg_t, NULL, registerer, &ra), 0);
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (targ){&s, i};
        assert_int_equal(pthread_create(&th[i], NULL, creator, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        void *rv;
        assert_int_equal(pthread_join(th[i], &rv), 0);
        assert_null(rv);
    }
    void *rv;
    assert_int_equal(pthread_join(reg_t, &rv), 0);
    assert_null(rv);
    atomic_store(&s.stop, 1);
    assert_int_equal(pthread_join(rt, &rv), 0);
    assert_null(rv);

    /* Every thread got the same "common" child. */
    for (int i = 1; i < NTHREADS; i++)
        assert_ptr_equal(s.seen_common[i], s.seen_common[0]);
    assert_true(sample_value(reg, "req_total{route=\"common\",status=\"200\"}") == NTHREADS * 2000);
    for (int i = 0; i < NTHREADS; i++) {
        char line[64];
        snprintf(line, sizeof line, "req_total{route=\"t%d\",status=\"200\"}", i);
        assert_true(sample_value(reg, line) == 2000);
    }
    for (int k = 0; k < 5; k++) {
        char line[64];
        snprintf(line, sizeof line, "req_total{route=\"spread\",status=\"%d\"}", k);
        assert_true(sample_value(reg, line) == NTHREADS * 400);
    }
    assert_true(sample_value(reg, "late_199") == 199);

    /* Exactly 1 + 8 + 5 children, no duplicates. */
    char *text = NULL;
    assert_int_equal(fw_metrics_render(reg, &text, NULL, NULL), FW_OK);
    int samples = 0;
    for (const char *p = text; (p = strstr(p, "\nreq_total{")) != NULL; p++)
        samples++;
    assert_int_equal(samples, 1 + NTHREADS + 5);
    free(text);
    fw_metrics_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition_text),
        cmocka_unit_test(test_empty_registry_and_histogram),
        cmocka_unit_test(test_format_value),
        cmocka_unit_test(test_counter_and_gauge_updates),
        cmocka_unit_test(test_callbacks),
        cmocka_unit_test(test_invalid_definitions),
        cmocka_unit_test(test_many_children),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_concurrent_children),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
