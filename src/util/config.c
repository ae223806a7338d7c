#include "util/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/dotenv.h"
#include "util/log.h"

/* ------------------------------------------------------------------------------------ */
/* value parsers                                                                        */

/* Copies s without leading/trailing blanks into buf (cap bytes); false when it does not fit. */
static bool trimmed(const char *s, char *buf, size_t cap)
{
    if (!s)
        return false;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= cap)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

bool fw_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    char b[16];
    if (!trimmed(s, b, sizeof b))
        return false;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(b, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(b, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

bool fw_parse_int(const char *s, long long *out)
{
    char b[64];
    if (!trimmed(s, b, sizeof b) || !b[0])
        return false;
    const char *p = b;
    if (*p == '+' || *p == '-')
        p++;
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        if (!isxdigit((unsigned char)p[2]))
            return false;
    } else if (!isdigit((unsigned char)*p)) {
        return false;
    }
    errno = 0;
    char *end;
    long long v = strtoll(b, &end, base);
    if (errno == ERANGE || *end != '\0')
        return false;
    *out = v;
    return true;
}

bool fw_parse_double(const char *s, double *out)
{
    char b[128];
    if (!trimmed(s, b, sizeof b) || !b[0])
        return false;
    errno = 0;
    char *end;
    double v = strtod(b, &end);
    if (end == b || *end != '\0' || !isfinite(v) || errno == ERANGE)
        return false;
    *out = v;
    return true;
}

/* Reads digits[.digits] at *p into *v; false when there is no digit. */
static bool read_decimal(const char **p, double *v)
{
    const char *s = *p;
    char num[64];
    size_t n = 0, digits = 0;
    while (isdigit((unsigned char)*s) || (*s == '.' && !memchr(num, '.', n))) {
        if (n + 1 >= sizeof num)
            return false;
        digits += *s != '.';
        num[n++] = *s++;
    }
    if (!digits)
        return false;
    num[n] = '\0';
    *v = strtod(num, NULL);
    *p = s;
    return isfinite(*v);
}

bool fw_parse_duration(const char *s, double *seconds)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}};
    char b[128];
    if (!trimmed(s, b, sizeof b) || !b[0])
        return false;
    const char *p = b;
    double total = 0;
    int parts = 0;
    while (*p) {
        double v;
        if (!read_decimal(&p, &v))
            return false;
        const char *u = p;
        while (isalpha((unsigned char)*p))
            p++;
        size_t ulen = (size_t)(p - u);
        if (ulen == 0) {
            if (parts > 0 || *p) /* a bare number must be the whole string */
                return false;
            total = v;
            break;
        }
        size_t k = 0;
        for (; k < sizeof units / sizeof units[0]; k++)
            if (strlen(units[k].unit) == ulen && memcmp(units[k].unit, u, ulen) == 0)
                break;
        if (k == sizeof units / sizeof units[0])
            return false;
        total += v * units[k].scale;
        parts++;
    }
    if (!isfinite(total) || total > FW_DURATION_MAX_S)
        return false;
    *seconds = total;
    return true;
}

bool fw_parse_size(const char *s, size_t *bytes)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ull << 10},
        {"ki", 1ull << 10},
        {"kib", 1ull << 10},
        {"kb", 1000ull},
        {"m", 1ull << 20},
        {"mi", 1ull << 20},
        {"mib", 1ull << 20},
        {"mb", 1000000ull},
        {"g", 1ull << 30},
        {"gi", 1ull << 30},
        {"gib", 1ull << 30},
        {"gb", 1000000000ull},
        {"t", 1ull << 40},
        {"ti", 1ull << 40},
        {"tib", 1ull << 40},
        {"tb", 1000000000000ull},
    };
    char b[64];
    if (!trimmed(s, b, sizeof b) || !isdigit((unsigned char)b[0]))
        return false;
    const char *p = b;
    uint64_t ip = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p++ - '0');
        if (ip > (UINT64_MAX - d) / 10)
            return false;
        ip = ip * 10 + d;
    }
    double frac = 0;
    if (*p == '.') {
        const char *f = p;
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
        char num[64];
        size_t n = (size_t)(p - f);
        if (n + 2 > sizeof num)
            return false;
        num[0] = '0';
        memcpy(num + 1, f, n);
        num[n + 1] = '\0';
        frac = strtod(num, NULL);
    }
    while (*p == ' ')
        p++;
    size_t k = 0;
    for (; k < sizeof units / sizeof units[0]; k++)
        if (strcasecmp(units[k].unit, p) == 0)
            break;
    if (k == sizeof units / sizeof units[0])
        return false;
    uint64_t mult = units[k].mult;
    if (ip > UINT64_MAX / mult)
        return false;
    uint64_t v = ip * mult;
    uint64_t fpart = (uint64_t)(frac * (double)mult); /* frac < 1, so this is < mult */
    if (v > UINT64_MAX - fpart || v + fpart > SIZE_MAX)
        return false;
    *bytes = (size_t)(v + fpart);
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* parsing                                                                              */

typedef union value {
    char *s;
    long long i;
    double d;
    bool b;
    size_t z;
    fw_str_list l;
} value;

static void value_free(fw_opt_type type, value *v)
{
    if (type == FW_OPT_STRING) {
        free(v->s);
        v->s = NULL;
    } else if (type == FW_OPT_LIST) {
        for (size_t i = 0; i < v->l.count; i++)
            free(v->l.items[i]);
        free(v->l.items);
        v->l.items = NULL;
        v->l.count = 0;
    }
}

/* Appends the comma-separated items of s to *l. */
static bool list_append(fw_str_list *l, const char *s)
{
    while (*s) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        const char *a = s, *z = s + n;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        if (z > a) {
            char **items = realloc(l->items, (l->count + 1) * sizeof *items);
            if (!items)
                return false;
            l->items = items;
            char *it = malloc((size_t)(z - a) + 1);
            if (!it)
                return false;
            memcpy(it, a, (size_t)(z - a));
            it[z - a] = '\0';
            l->items[l->count++] = it;
        }
        s += n;
        if (*s == ',')
            s++;
    }
    return true;
}

static bool has_range(const fw_option *o)
{
    return o->min < o->max;
}

/* Parses text for o into *v. On failure returns a static reason; *range_fail set when the
 * value parsed but is outside [min, max]. NULL on success; "out of memory" on ENOMEM. */
static const char *parse_value(const fw_option *o, const char *text, value *v, bool *range_fail)
{
    *range_fail = false;
    switch (o->type) {
    case FW_OPT_STRING:
        v->s = strdup(text);
        return v->s ? NULL : "out of memory";
    case FW_OPT_LIST:
        return list_append(&v->l, text) ? NULL : "out of memory";
    case FW_OPT_BOOL:
        return fw_parse_bool(text, &v->b) ? NULL : "not a boolean (true/false/1/0/yes/no/on/off)";
    case FW_OPT_INT: {
        long long x;
        if (!fw_parse_int(text, &x))
            return "not an integer";
        if (x < INT_MIN || x > INT_MAX)
            return "integer out of range";
        if (has_range(o) && ((double)x < o->min || (double)x > o->max)) {
            *range_fail = true;
            return "out of range";
        }
        v->i = x;
        return NULL;
    }
    case FW_OPT_DOUBLE:
    case FW_OPT_DURATION: {
        double x;
        if (o->type == FW_OPT_DOUBLE ? !fw_parse_double(text, &x) : !fw_parse_duration(text, &x))
            return o->type == FW_OPT_DOUBLE ? "not a number" : "not a duration";
        if (has_range(o) && (x < o->min || x > o->max)) {
            *range_fail = true;
            return "out of range";
        }
        v->d = x;
        return NULL;
    }
    case FW_OPT_SIZE: {
        size_t x;
        if (!fw_parse_size(text, &x))
            return "not a size";
        if (has_range(o) && ((double)x < o->min || (double)x > o->max)) {
            *range_fail = true;
            return "out of range";
        }
        v->z = x;
        return NULL;
    }
    }
    return "unknown option type";
}

static const char *type_metavar(const fw_option *o)
{
    if (o->metavar)
        return o->metavar;
    switch (o->type) {
    case FW_OPT_STRING:
        return "STR";
    case FW_OPT_INT:
        return "N";
    case FW_OPT_DOUBLE:
        return "X";
    case FW_OPT_BOOL:
        return "BOOL";
    case FW_OPT_DURATION:
        return "DURATION";
    case FW_OPT_SIZE:
        return "SIZE";
    case FW_OPT_LIST:
        return "LIST";
    }
    return "VALUE";
}

/* Formats a range bound of o's type ("1", "0.5", "30s", "1048576"). */
static void format_bound(const fw_option *o, double x, char *buf, size_t cap)
{
    if (o->type == FW_OPT_DURATION)
        snprintf(buf, cap, "%gs", x);
    else if (o->type == FW_OPT_INT || o->type == FW_OPT_SIZE)
        snprintf(buf, cap, "%.0f", x);
    else
        snprintf(buf, cap, "%g", x);
}

/* A value for a message: redacted for secrets, at most 48 chars, controls as '?'. */
static void show_value(const fw_option *o, const char *text, char *buf, size_t cap)
{
    if (o->flags & FW_OPT_SECRET) {
        snprintf(buf, cap, "<redacted>");
        return;
    }
    size_t n = 0, max = cap < 52 ? cap - 4 : 48;
    for (const char *p = text; *p && n < max; p++)
        buf[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    if (strlen(text) > n) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

static const char *real_getenv(const char *name, void *user)
{
    (void)user;
    return getenv(name);
}

/* Flag names match with '-' and '_' equivalent. */
static bool name_eq(const char *a, const char *b, size_t blen)
{
    size_t i = 0;
    for (; i < blen && a[i]; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y)
            return false;
    }
    return i == blen && a[i] == '\0';
}

static long find_flag(const fw_option *t, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].name && name_eq(t[i].name, name, len))
            return (long)i;
    return -1;
}

typedef struct flag_val {
    size_t opt;
    const char *text;
} flag_val;

static fw_err check_table(const fw_option *t, size_t n, fw_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!t[i].dest || (!t[i].name && !t[i].env) || (unsigned)t[i].type > FW_OPT_LIST)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "config table: option %zu has no destination, name or type", i);
        for (size_t j = 0; j < i; j++)
            if ((t[i].name && t[j].name && strcmp(t[i].name, t[j].name) == 0) ||
                (t[i].short_name && t[i].short_name == t[j].short_name))
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                    "config table: option %s defined twice",
                                    t[i].name ? t[i].name : t[i].env);
    }
    return FW_OK;
}

/* Scans argv into flags[] (opt index + text). */
static fw_err scan_argv(const fw_option *t, size_t n, int argc, char *const *argv,
                        const fw_config_opts *o, flag_val *flags, size_t *nflags, fw_error *err)
{
    size_t npos = 0;
    bool dashdash = false;
    *nflags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!a)
            break;
        if (!dashdash && strcmp(a, "--") == 0) {
            dashdash = true;
            continue;
        }
        if (dashdash || a[0] != '-' || a[1] == '\0') {
            if (!o->positional)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "unexpected argument '%.64s'", a);
            if (npos >= o->positional_cap)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "too many arguments ('%.64s')",
                                    a);
            o->positional[npos++] = a;
            continue;
        }
        long idx;
        const char *text = NULL;
        bool neg = false;
        if (a[1] != '-') { /* short option */
            idx = -1;
            for (size_t k = 0; k < n && a[2] == '\0'; k++)
                if (t[k].short_name && t[k].short_name == a[1])
                    idx = (long)k;
            if (idx < 0) {
                if (strcmp(a, "-h") == 0)
                    continue;
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "unknown flag %.64s", a);
            }
        } else {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            idx = find_flag(t, n, name, len);
            if (idx < 0 && !eq && len > 3 && strncmp(name, "no-", 3) == 0) {
                idx = find_flag(t, n, name + 3, len - 3);
                if (idx >= 0 && t[idx].type != FW_OPT_BOOL)
                    idx = -1;
                neg = idx >= 0;
            }
            if (idx < 0) {
                if (strcmp(a, "--help") == 0)
                    continue;
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "unknown flag --%.*s",
                                    (int)(len > 64 ? 64 : len), name);
            }
            if (eq)
                text = eq + 1;
        }
        const fw_option *opt = &t[idx];
        if (!text) {
            if (opt->type == FW_OPT_BOOL)
                text = neg ? "false" : "true";
            else if (i + 1 < argc && argv[i + 1])
                text = argv[++i];
            else
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "--%s: missing value",
                                    opt->name ? opt->name : "?");
        }
        flags[(*nflags)++] = (flag_val){(size_t)idx, text};
    }
    if (o->npositional)
        *o->npositional = npos;
    return FW_OK;
}

/* Where a raw value came from, for messages. */
typedef struct origin {
    fw_opt_source src;
    const char *var; /* environment/.env variable name */
    unsigned line;   /* .env line */
} origin;

static fw_err value_error(const fw_option *o, const origin *org, const char *text, const char *why,
                          bool range_fail, fw_error *err)
{
    char shown[64], label[96], where[48];
    show_value(o, text, shown, sizeof shown);
    if (org->src == FW_SRC_FLAG || org->src == FW_SRC_DEFAULT || !org->var) {
        if (o->name)
            snprintf(label, sizeof label, "--%s", o->name);
        else
            snprintf(label, sizeof label, "%s", o->env ? o->env : "?");
    } else
        snprintf(label, sizeof label, "%s", org->var);
    if (org->src == FW_SRC_DOTENV)
        snprintf(where, sizeof where, ".env line %u", org->line);
    else
        snprintf(where, sizeof where, "%s", fw_config_source_name(org->src));
    if (range_fail) {
        char lo[32], hi[32];
        format_bound(o, o->min, lo, sizeof lo);
        format_bound(o, o->max, hi, sizeof hi);
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "%s='%s' (%s): must be between %s and %s",
                            label, shown, where, lo, hi);
    }
    return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "%s='%s' (%s): %s", label, shown, where, why);
}

/* Whether a text value from the environment or .env counts as set for o. */
static bool counts_as_set(const fw_option *o, const char *text)
{
    return text && (text[0] || o->type == FW_OPT_STRING || o->type == FW_OPT_LIST);
}

static fw_err resolve(const fw_option *o, size_t idx, const flag_val *flags, size_t nflags,
                      fw_getenv_fn ge, void *gu, const fw_dotenv *de, value *v, fw_opt_source *src,
                      fw_error *err)
{
    bool rf;
    const char *why;
    /* flags */
    size_t last = SIZE_MAX;
    for (size_t k = 0; k < nflags; k++)
        if (flags[k].opt == idx) {
            last = k;
            if (o->type == FW_OPT_LIST) {
                origin org = {FW_SRC_FLAG, NULL, 0};
                if ((why = parse_value(o, flags[k].text, v, &rf)))
                    return value_error(o, &org, flags[k].text, why, rf, err);
            }
        }
    if (last != SIZE_MAX) {
        *src = FW_SRC_FLAG;
        if (o->type == FW_OPT_LIST)
            return FW_OK;
        origin org = {FW_SRC_FLAG, NULL, 0};
        if ((why = parse_value(o, flags[last].text, v, &rf)))
            return value_error(o, &org, flags[last].text, why, rf, err);
        return FW_OK;
    }
    /* environment, then .env */
    const char *names[2] = {o->env, o->env_alias};
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 2; k++) {
            if (!names[k])
                continue;
            const char *text = pass == 0 ? ge(names[k], gu) : fw_dotenv_get(de, names[k]);
            if (!counts_as_set(o, text))
                continue;
            origin org = {pass == 0 ? FW_SRC_ENV : FW_SRC_DOTENV, names[k],
                          pass == 0 ? 0 : fw_dotenv_line_of(de, names[k])};
            *src = org.src;
            if ((why = parse_value(o, text, v, &rf)))
                return value_error(o, &org, text, why, rf, err);
            return FW_OK;
        }
    /* default */
    *src = FW_SRC_DEFAULT;
    if (!o->def)
        return FW_OK; /* zero value: NULL string, empty list, 0, false */
    origin org = {FW_SRC_DEFAULT, NULL, 0};
    if ((why = parse_value(o, o->def, v, &rf)))
        return value_error(o, &org, o->def, why, rf, err);
    return FW_OK;
}

static void commit(fw_option *o, value *v)
{
    switch (o->type) {
    case FW_OPT_STRING:
        *(char **)o->dest = v->s;
        break;
    case FW_OPT_LIST:
        *(fw_str_list *)o->dest = v->l;
        break;
    case FW_OPT_INT:
        *(int *)o->dest = (int)v->i;
        break;
    case FW_OPT_DOUBLE:
    case FW_OPT_DURATION:
        *(double *)o->dest = v->d;
        break;
    case FW_OPT_BOOL:
        *(bool *)o->dest = v->b;
        break;
    case FW_OPT_SIZE:
        *(size_t *)o->dest = v->z;
        break;
    }
}

fw_err fw_config_parse_ex(fw_option *table, size_t n, int argc, char *const *argv,
                          const fw_config_opts *opts, fw_error *err)
{
    static const fw_config_opts none = {0};
    if (!opts)
        opts = &none;
    if ((!table && n) || (argc > 0 && !argv))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "config: NULL argument");
    fw_err rc = check_table(table, n, err);
    if (rc)
        return rc;
    fw_getenv_fn ge = opts->getenv ? opts->getenv : real_getenv;
    flag_val *flags = calloc(argc > 0 ? (size_t)argc : 1, sizeof *flags);
    value *vals = calloc(n ? n : 1, sizeof *vals);
    fw_opt_source *srcs = calloc(n ? n : 1, sizeof *srcs);
    fw_dotenv *de = NULL;
    if (!flags || !vals || !srcs) {
        rc = fw_error_set(err, FW_ERR_NOMEM, "config: out of memory");
        goto out;
    }
    size_t nflags = 0;
    if ((rc = scan_argv(table, n, argc, argv, opts, flags, &nflags, err)))
        goto out;
    if (opts->dotenv_path) {
        fw_error derr;
        rc = fw_dotenv_load(opts->dotenv_path, &de, &derr);
        if (rc == FW_ERR_PARSE && opts->dotenv_lenient) {
            FW_WARN("config", "ignoring invalid .env lines", "path=\"%s\" first=\"%s\"",
                    opts->dotenv_path, derr.message);
            rc = FW_OK;
        } else if (rc) {
            fw_error_set(err, rc, "%s", derr.message);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = resolve(&table[i], i, flags, nflags, ge, opts->getenv_user, de, &vals[i],
                          &srcs[i], err)))
            goto out;
    for (size_t i = 0; i < n; i++) {
        commit(&table[i], &vals[i]);
        table[i].source = srcs[i];
    }
    fw_error_clear(err);
    n = 0; /* ownership moved: nothing to free below */
out:
    if (vals)
        for (size_t i = 0; i < n; i++)
            value_free(table[i].type, &vals[i]);
    fw_dotenv_free(de);
    free(srcs);
    free(vals);
    free(flags);
    return rc;
}

fw_err fw_config_parse(fw_option *table, size_t n, int argc, char *const *argv,
                       const char *dotenv_path, fw_error *err)
{
    fw_config_opts o = {.dotenv_path = dotenv_path};
    return fw_config_parse_ex(table, n, argc, argv, &o, err);
}

void fw_config_free(fw_option *table, size_t n)
{
    for (size_t i = 0; table && i < n; i++) {
        if (!table[i].dest)
            continue;
        if (table[i].type == FW_OPT_STRING) {
            value v = {.s = *(char **)table[i].dest};
            value_free(FW_OPT_STRING, &v);
            *(char **)table[i].dest = NULL;
        } else if (table[i].type == FW_OPT_LIST) {
            value v = {.l = *(fw_str_list *)table[i].dest};
            value_free(FW_OPT_LIST, &v);
            *(fw_str_list *)table[i].dest = (fw_str_list){NULL, 0};
        }
    }
}

bool fw_config_wants_help(int argc, char *const *argv)
{
    for (int i = 1; i < argc && argv && argv[i]; i++) {
        if (strcmp(argv[i], "--") == 0)
            return false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

const char *fw_config_source_name(fw_opt_source src)
{
    switch (src) {
    case FW_SRC_FLAG:
        return "flag";
    case FW_SRC_ENV:
        return "environment";
    case FW_SRC_DOTENV:
        return ".env";
    case FW_SRC_DEFAULT:
        return "default";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------------------ */
/* formatting                                                                           */

static size_t format_duration(double s, char *buf, size_t cap)
{
    double ns = s * 1e9;
    if (ns >= 0 && ns < 9e18 && fabs(ns - (double)llround(ns)) < 1e-3) {
        long long n = llround(ns);
        static const struct {
            const char *u;
            long long d;
        } units[] = {{"h", 3600000000000LL}, {"m", 60000000000LL}, {"s", 1000000000LL},
                     {"ms", 1000000LL},      {"us", 1000LL},       {"ns", 1LL}};
        if (n == 0)
            return (size_t)snprintf(buf, cap, "0s");
        for (size_t i = 0;; i++)
            if (n % units[i].d == 0)
                return (size_t)snprintf(buf, cap, "%lld%s", n / units[i].d, units[i].u);
    }
    /* Fixed notation (the parser takes no exponent), trailing zeros trimmed. */
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%.17f", s);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '0')
        n--;
    if (tmp[n - 1] == '.')
        n--;
    tmp[n] = '\0';
    return (size_t)snprintf(buf, cap, "%ss", tmp);
}

static size_t format_size(size_t z, char *buf, size_t cap)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 4; i++) {
        uint64_t d = 1ull << (10 * (4 - i));
        if (z && (uint64_t)z % d == 0)
            return (size_t)snprintf(buf, cap, "%llu%s", (unsigned long long)((uint64_t)z / d),
                                    units[i]);
    }
    return (size_t)snprintf(buf, cap, "%zu", z);
}

static size_t format_double(double d, char *buf, size_t cap)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof tmp, "%.17g", d);
    return (size_t)snprintf(buf, cap, "%s", tmp);
}

size_t fw_config_format_value(const fw_option *opt, char *buf, size_t cap)
{
    if (!opt || !opt->dest)
        return (size_t)snprintf(buf, cap, "<unset>");
    if ((opt->flags & FW_OPT_SECRET) && opt->type != FW_OPT_STRING && opt->type != FW_OPT_LIST)
        return (size_t)snprintf(buf, cap, "<redacted>");
    switch (opt->type) {
    case FW_OPT_STRING: {
        const char *s = *(char *const *)opt->dest;
        if (!s)
            return (size_t)snprintf(buf, cap, "<unset>");
        if ((opt->flags & FW_OPT_SECRET) && *s)
            return (size_t)snprintf(buf, cap, "<redacted>");
        return (size_t)snprintf(buf, cap, "%s", s);
    }
    case FW_OPT_LIST: {
        const fw_str_list *l = opt->dest;
        if ((opt->flags & FW_OPT_SECRET) && l->count)
            return (size_t)snprintf(buf, cap, "<redacted>");
        size_t need = 0;
        if (cap)
            buf[0] = '\0';
        for (size_t i = 0; i < l->count; i++) {
            size_t off = need < cap ? need : cap;
            need += (size_t)snprintf(buf ? buf + off : NULL, cap - off, "%s%s", i ? "," : "",
                                     l->items[i]);
        }
        return need;
    }
    case FW_OPT_INT:
        return (size_t)snprintf(buf, cap, "%d", *(const int *)opt->dest);
    case FW_OPT_DOUBLE:
        return format_double(*(const double *)opt->dest, buf, cap);
    case FW_OPT_BOOL:
        return (size_t)snprintf(buf, cap, "%s", *(const bool *)opt->dest ? "true" : "false");
    case FW_OPT_DURATION:
        return format_duration(*(const double *)opt->dest, buf, cap);
    case FW_OPT_SIZE:
        return format_size(*(const size_t *)opt->dest, buf, cap);
    }
    return (size_t)snprintf(buf, cap, "?");
}

/* snprintf-like appender. */
typedef struct sbuf {
    char *buf;
    size_t cap, len;
} sbuf;

static void sb_putc(sbuf *b, char c)
{
    if (b->len + 1 < b->cap) {
        b->buf[b->len] = c;
        b->buf[b->len + 1] = '\0';
    } else if (b->cap) {
        b->buf[b->cap - 1] = '\0';
    }
    b->len++;
}

static void sb_puts(sbuf *b, const char *s)
{
    for (; *s; s++)
        sb_putc(b, *s);
}

/* Writes s as a logfmt value: bare when safe, else quoted with \" and \\ escaped. */
static void sb_logfmt_value(sbuf *b, const char *s)
{
    bool quote = !*s;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            quote = true;
    if (!quote) {
        sb_puts(b, s);
        return;
    }
    sb_putc(b, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_putc(b, '\\');
        sb_putc(b, (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
    }
    sb_putc(b, '"');
}

static void sb_key(sbuf *b, const fw_option *o)
{
    const char *k = o->name ? o->name : o->env;
    for (; *k; k++)
        sb_putc(b, *k == '-' ? '_' : (o->name ? *k : (char)tolower((unsigned char)*k)));
}

size_t fw_config_describe(const fw_option *table, size_t n, char *buf, size_t cap)
{
    sbuf b = {buf, cap, 0};
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; table && i < n; i++) {
        size_t need = fw_config_format_value(&table[i], NULL, 0);
        char *v = malloc(need + 1);
        if (i)
            sb_putc(&b, ' ');
        sb_key(&b, &table[i]);
        sb_putc(&b, '=');
        if (!v) {
            sb_puts(&b, "?");
            continue;
        }
        fw_config_format_value(&table[i], v, need + 1);
        sb_logfmt_value(&b, v);
        free(v);
    }
    bool any = false;
    for (size_t i = 0; table && i < n; i++) {
        if (table[i].source == FW_SRC_DEFAULT)
            continue;
        sb_puts(&b, any ? "," : (n ? " sources=\"" : "sources=\""));
        sb_key(&b, &table[i]);
        sb_putc(&b, ':');
        sb_puts(&b, fw_config_source_name(table[i].source));
        any = true;
    }
    if (any)
        sb_putc(&b, '"');
    return b.len;
}

/* ------------------------------------------------------------------------------------ */
/* help                                                                                 */

static void help_flag(const fw_option *o, char *buf, size_t cap)
{
    char shortp[8] = "    ";
    if (o->short_name)
        snprintf(shortp, sizeof shortp, "-%c, ", o->short_name);
    if (!o->name)
        snprintf(buf, cap, "    (no flag)");
    else if (o->type == FW_OPT_BOOL)
        snprintf(buf, cap, "%s--[no-]%s", shortp, o->name);
    else
        snprintf(buf, cap, "%s--%s=%s", shortp, o->name, type_metavar(o));
}

static void help_env(const fw_option *o, char *buf, size_t cap)
{
    if (o->env && o->env_alias)
        snprintf(buf, cap, "%s, %s", o->env, o->env_alias);
    else
        snprintf(buf, cap, "%s", o->env ? o->env : o->env_alias ? o->env_alias : "-");
}

static void help_default(const fw_option *o, char *buf, size_t cap)
{
    if (!o->def)
        snprintf(buf, cap, "-");
    else if ((o->flags & FW_OPT_SECRET) && o->def[0])
        snprintf(buf, cap, "<redacted>");
    else if (!o->def[0])
        snprintf(buf, cap, "\"\"");
    else
        snprintf(buf, cap, "%s", o->def);
}

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

void fw_config_help(const fw_option *table, size_t n, FILE *out)
{
    enum { CAP = 160 };
    char f[CAP], e[CAP], d[CAP];
    size_t wf = strlen("-h, --help"), we = strlen("ENVIRONMENT"), wd = strlen("DEFAULT");
    bool own_help = false;
    for (size_t i = 0; table && i < n; i++) {
        help_flag(&table[i], f, CAP);
        help_env(&table[i], e, CAP);
        help_default(&table[i], d, CAP);
        wf = wf > strlen(f) ? wf : min_sz(strlen(f), 36);
        we = we > strlen(e) ? we : min_sz(strlen(e), 40);
        wd = wd > strlen(d) ? wd : min_sz(strlen(d), 24);
        if (table[i].name && strcmp(table[i].name, "help") == 0)
            own_help = true;
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", (int)wf, "FLAG", (int)we, "ENVIRONMENT", (int)wd,
            "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; table && i < n; i++) {
        const fw_option *o = &table[i];
        help_flag(o, f, CAP);
        help_env(o, e, CAP);
        help_default(o, d, CAP);
        fprintf(out, "  %-*s  %-*s  %-*s  %s", (int)wf, f, (int)we, e, (int)wd, d,
                o->help ? o->help : "");
        if (has_range(o) && o->type != FW_OPT_STRING && o->type != FW_OPT_BOOL &&
            o->type != FW_OPT_LIST) {
            char lo[32], hi[32];
            format_bound(o, o->min, lo, sizeof lo);
            format_bound(o, o->max, hi, sizeof hi);
            fprintf(out, " [%s..%s]", lo, hi);
        }
        fputc('\n', out);
    }
    if (!own_help)
        fprintf(out, "  %-*s  %-*s  %-*s  %s\n", (int)wf, "-h, --help", (int)we, "-", (int)wd, "-",
                "Show this help and exit.");
}
