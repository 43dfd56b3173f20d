/* janus_utils._speedups: the common log call, encoded and pushed in C.
 *
 * A log call that is all plain data (a str template, printf arguments, fields
 * whose values are str/int/float/bool/None) is formatted, encoded and pushed
 * here without leaving C and without giving up the GIL.  The bytes are exactly
 * what marshal.dumps(record, 2) writes for the same record, so the flusher
 * cannot tell which path a record took.  Anything else (odd arguments, nested
 * or foreign field values, a suspect, oversize or non-UTF-8 record, a full
 * ring) goes back to the Python path in janus_utils/logger.py, which stays the
 * reference behaviour.
 *
 * The level methods of janus_utils.logger.Logger are here too (its base
 * class, Logger below): the level check comes before any argument is
 * packed, and an enabled call goes from the caller's argument vector to the
 * encoder without a Python frame.
 *
 * The ring lives in the cffi module janus_utils._ring_cffi; this module only
 * calls it, through function pointers that module hands out (Ring.native()).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include "ring.h"

typedef int (*push_fn)(jr_ring *, const uint8_t *, size_t, int, int64_t);
typedef int (*suspect_fn)(const jr_ring *, const uint8_t *, size_t);
typedef int (*span_fn)(const jr_ring *, const uint8_t *, size_t, size_t, size_t);
typedef size_t (*quiet_fn)(const jr_ring *, const uint8_t *, size_t);

/* Records larger than this take the Python path; a log line rarely is. */
#define STACK_BUF 4096

/* marshal's type codes (Python/marshal.c), version 2: no references. */
#define M_NULL '0'
#define M_NONE 'N'
#define M_FALSE 'F'
#define M_TRUE 'T'
#define M_INT 'i'
#define M_LONG 'l'
#define M_FLOAT 'g'
#define M_UNICODE 'u'
#define M_TUPLE '('
#define M_DICT '{'

/* The record: (format, ts, level, logger, message, fields, exception, pid,
 * thread).  _record.py uses this module only while its FORMAT is FORMAT. */
#define RECORD_FORMAT 1
#define RECORD_ITEMS 9
_Static_assert(RECORD_FORMAT < 256 && RECORD_ITEMS < 256, "put_record_start writes them as one byte");

static PyObject *name_attr; /* "name" */
static PyTypeObject *thread_local_type; /* _thread._local */
static uint64_t emitter_epochs;         /* the last epoch an Emitter_init gave out (cached_thread) */

/* The secret prefilter, run on each string as it is written (and on each
 * int field, for card numbers): a secret lies
 * within one string (message, field name or value), and the strings that
 * repeat call after call (field names, the logger's and thread's names,
 * constant values) are scanned once.  A string the prefilter passed is held
 * in `clean`, so its address cannot be reused by another object while the
 * verdict is kept.  Names always take their slot; a value only takes a slot
 * no name holds, so values that change every call cannot push names out.
 *
 * Each string has two candidate slots, from a multiplicative hash of its
 * address.  One slot per string, indexed by address bits, made strings of
 * one allocator size class collide (pymalloc places them a fixed stride
 * apart): two field names then pushed each other out and were scanned again
 * on every call.  With two choices a name finds a free slot or one held by a
 * value.
 *
 * A field name is checked as a key: its end may end a key word ("pin" is
 * one, in the logger's name "svc.pin" it is not).  The ring exports the
 * text rule only, so the name is scanned as if followed by ':', which may
 * follow a key word and is in no token.  A key verdict covers the text one,
 * not the reverse, so a slot remembers which it holds (`as_key`). */
#define CLEAN_SLOTS 128 /* a power of two; CLEAN_BITS its log2 */
#define CLEAN_BITS 7
#define CLEAN_MAX 256 /* longer strings are scanned every time, not kept */

enum { FORGET, KEEP_VALUE, KEEP_NAME };

typedef struct {
    jr_ring *ring;
    suspect_fn suspect;
    span_fn span; /* jr_suspect_span, or NULL */
    quiet_fn quiet; /* jr_quiet_prefix, or NULL (used only with span) */
    PyObject *clean[CLEAN_SLOTS];
    char is_name[CLEAN_SLOTS];
    char as_key[CLEAN_SLOTS];
} scanner;

static int suspect_key(scanner *sc, const char *u, Py_ssize_t n) {
    uint8_t key[CLEAN_MAX + 1];
    if (n > CLEAN_MAX)
        return 1; /* a field name this long is the Python path's to check */
    memcpy(key, u, (size_t)n);
    key[n] = ':';
    return sc->suspect(sc->ring, key, (size_t)n + 1);
}

/* The two slots of `s`: the top bits of its address times 2^64/phi, and the
 * bits below them (Knuth's multiplicative hashing). */
static inline void slots_of(PyObject *s, size_t *a, size_t *b) {
    uint64_t h = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ull;
    *a = (size_t)(h >> (64 - CLEAN_BITS));
    *b = (size_t)(h >> (64 - 2 * CLEAN_BITS)) & (CLEAN_SLOTS - 1);
}

static inline int known_clean(const scanner *sc, size_t i, PyObject *s, int as_key) {
    return sc->clean[i] == s && (sc->as_key[i] || !as_key);
}

static int suspect_str(scanner *sc, PyObject *s, const char *u, Py_ssize_t n, int keep, int as_key) {
    if (keep == FORGET) /* the formatted message, made anew by each call: not worth a look-up */
        return as_key ? suspect_key(sc, u, n) : sc->suspect(sc->ring, (const uint8_t *)u, (size_t)n);
    size_t a, b;
    slots_of(s, &a, &b);
    if (known_clean(sc, a, s, as_key) || known_clean(sc, b, s, as_key))
        return 0;
    if (as_key ? suspect_key(sc, u, n) : sc->suspect(sc->ring, (const uint8_t *)u, (size_t)n))
        return 1;
    if (n > CLEAN_MAX)
        return 0;
    /* Where to keep it: its own slot again, a free one, then one a value
     * holds; a name may replace a name only when both slots hold names. */
    size_t i;
    if (sc->clean[a] == s || sc->clean[a] == NULL)
        i = a;
    else if (sc->clean[b] == s || sc->clean[b] == NULL)
        i = b;
    else if (!sc->is_name[a])
        i = a;
    else if (!sc->is_name[b])
        i = b;
    else if (keep == KEEP_NAME)
        i = a;
    else
        return 0;
    Py_XSETREF(sc->clean[i], Py_NewRef(s));
    sc->is_name[i] = keep == KEEP_NAME;
    sc->as_key[i] = (char)as_key;
    return 0;
}

static void scanner_clear(scanner *sc) {
    for (int i = 0; i < CLEAN_SLOTS; i++) {
        Py_CLEAR(sc->clean[i]);
        sc->is_name[i] = 0;
        sc->as_key[i] = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* the encoder                                                               */

typedef struct {
    uint8_t *p;
    uint8_t *end;
    scanner *scan;  /* NULL: no prefilter */
    int suspect;    /* the prefilter flagged a string */
} wbuf;

/* Each writer returns 0, or -1 when the buffer is too small or the value is
 * not one this encoder writes (the caller then takes the Python path). */

/* A little-endian u32 at p (marshal's byte order). */
static inline void store_u32(uint8_t *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 4);
#else
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
#endif
}

static inline void store_u16(uint8_t *p, uint16_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 2);
#else
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
#endif
}

/* n bytes, n at most a few dozen as a rule (names, ids, short messages):
 * two overlapping word copies instead of a call into libc's memcpy. */
static inline void copy_bytes(uint8_t *dst, const void *src, size_t n) {
    const uint8_t *s = src;
    if (n <= 16) {
        if (n >= 8) {
            memcpy(dst, s, 8);
            memcpy(dst + n - 8, s + n - 8, 8);
        } else if (n >= 4) {
            memcpy(dst, s, 4);
            memcpy(dst + n - 4, s + n - 4, 4);
        } else {
            memcpy(dst, s, n);
        }
    } else if (n <= 32) {
        memcpy(dst, s, 16);
        memcpy(dst + n - 16, s + n - 16, 16);
    } else {
        memcpy(dst, s, n);
    }
}

static inline int put(wbuf *b, const void *src, size_t n) {
    if ((size_t)(b->end - b->p) < n)
        return -1;
    copy_bytes(b->p, src, n);
    b->p += n;
    return 0;
}

/* A str's UTF-8 bytes as marshal writes a str: M_UNICODE, the length, the bytes. */
static inline int put_utf8(wbuf *b, const void *u, Py_ssize_t n) {
    if (b->end - b->p < 5 || n > b->end - b->p - 5)
        return -1;
    b->p[0] = M_UNICODE;
    store_u32(b->p + 1, (uint32_t)n);
    copy_bytes(b->p + 5, u, (size_t)n);
    b->p += 5 + n;
    return 0;
}

static inline int put_byte(wbuf *b, uint8_t c) {
    if (b->p == b->end)
        return -1;
    *b->p++ = c;
    return 0;
}

static inline int put_u32(wbuf *b, uint32_t v) {
    if (b->end - b->p < 4)
        return -1;
    store_u32(b->p, v);
    b->p += 4;
    return 0;
}

/* A marshal type code and a u32 (a tuple's size, a str's length). */
static inline int put_head(wbuf *b, uint8_t code, uint32_t v) {
    if (b->end - b->p < 5)
        return -1;
    b->p[0] = code;
    store_u32(b->p + 1, v);
    b->p += 5;
    return 0;
}

static int put_long(wbuf *b, long long x);

static inline int put_int(wbuf *b, long long x) {
    if (x >= INT32_MIN && x <= INT32_MAX)
        return put_head(b, M_INT, (uint32_t)(int32_t)x);
    return put_long(b, x);
}

static int put_long(wbuf *b, long long x) {
    /* As marshal's w_PyLong: a signed count of 15-bit digits, least
     * significant first, the top one non-zero. */
    uint64_t m = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    int32_t n = (64 - __builtin_clzll(m) + 14) / 15; /* m > 2^31 here: never 0 */
    if (b->end - b->p < 5 + 2 * n)
        return -1;
    b->p[0] = M_LONG;
    store_u32(b->p + 1, (uint32_t)(x < 0 ? -n : n));
    uint8_t *d = b->p + 5;
    for (int32_t k = 0; k < n; k++, m >>= 15) {
        d[2 * k] = (uint8_t)(m & 0xff);
        d[2 * k + 1] = (uint8_t)((m >> 8) & 0x7f);
    }
    b->p += 5 + 2 * n;
    return 0;
}

/* The record's first four items, (format, ts, level, as marshal writes
 * them: the tuple's head, format and level as M_INT, ts as M_LONG of five
 * 15-bit digits, which it is from 2^60 ns (2006) to the end of a long long.
 * One bounds check and no loop; any other ts or level goes through put_int. */
static inline int put_record_start(wbuf *b, long long ts, long level) {
    if (ts < (1LL << 60) || level < INT32_MIN || level > INT32_MAX || b->end - b->p < 30)
        return put_head(b, M_TUPLE, RECORD_ITEMS) || put_int(b, RECORD_FORMAT) || put_int(b, ts) ||
               put_int(b, level);
    static const uint8_t start[15] = {M_TUPLE, RECORD_ITEMS, 0, 0, 0, M_INT, RECORD_FORMAT, 0, 0, 0,
                                      M_LONG, 5, 0, 0, 0};
    uint8_t *p = b->p;
    memcpy(p, start, sizeof start);
    uint64_t m = (uint64_t)ts; /* each 15-bit digit as a little-endian u16 */
    store_u16(p + 15, (uint16_t)(m & 0x7fff));
    store_u16(p + 17, (uint16_t)(m >> 15 & 0x7fff));
    store_u16(p + 19, (uint16_t)(m >> 30 & 0x7fff));
    store_u16(p + 21, (uint16_t)(m >> 45 & 0x7fff));
    store_u16(p + 23, (uint16_t)(m >> 60));
    p[25] = M_INT;
    store_u32(p + 26, (uint32_t)(int32_t)level);
    b->p += 30;
    return 0;
}

/* A str; `keep` says whether the prefilter may remember its verdict (FORGET
 * for the formatted message, a new object every call), `as_key` whether it
 * is checked as a field name. */
static int put_text(wbuf *b, PyObject *s, int keep, int as_key) {
    Py_ssize_t n;
    const char *u;
    if (PyUnicode_IS_ASCII(s)) {
        u = (const char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else {
        if (PyUnicode_GET_LENGTH(s) > b->end - b->p)
            return -1; /* cannot fit: not worth a UTF-8 copy attached to the string */
        u = PyUnicode_AsUTF8AndSize(s, &n);
        if (u == NULL) { /* a lone surrogate: marshal's surrogatepass is Python's job */
            PyErr_Clear();
            return -1;
        }
    }
    if (put_utf8(b, u, n))
        return -1;
    if (b->scan != NULL && !b->suspect && suspect_str(b->scan, s, u, n, keep, as_key))
        b->suspect = 1;
    return 0;
}

static inline int put_str(wbuf *b, PyObject *s) { return put_text(b, s, KEEP_NAME, 0); }
static inline int put_key(wbuf *b, PyObject *s) { return put_text(b, s, KEEP_NAME, 1); }

/* An exact int's value, when it fits a long long (0), else -1 (no error
 * set).  CPython 3.11 keeps an int below 2^30 in one digit: read it there,
 * without a call. */
static inline int long_value(PyObject *v, long long *x) {
#if PY_VERSION_HEX < 0x030C0000
    Py_ssize_t size = Py_SIZE(v);
    if (size >= -1 && size <= 1) {
        *x = size == 0 ? 0 : (long long)size * (long long)((PyLongObject *)v)->ob_digit[0];
        return 0;
    }
#endif
    int overflow;
    *x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (*x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/* The value kinds a record written here may hold, exact types only (a str or
 * int subclass is not plain: marshal refuses it, and so does this). */
static inline int is_plain(PyObject *v) {
    return v == Py_None || v == Py_True || v == Py_False || PyUnicode_CheckExact(v) ||
           PyLong_CheckExact(v) || PyFloat_CheckExact(v);
}

static int put_value(wbuf *b, PyObject *v) {
    if (v == Py_None)
        return put_byte(b, M_NONE);
    if (v == Py_True)
        return put_byte(b, M_TRUE);
    if (v == Py_False)
        return put_byte(b, M_FALSE);
    if (PyUnicode_CheckExact(v))
        return put_text(b, v, KEEP_VALUE, 0);
    if (PyLong_CheckExact(v)) {
        long long x;
        if (long_value(v, &x))
            return -1;
        /* A card number as an int: the prefilter's rule (d).  One compare
         * for any int below 13 digits. */
        if (b->scan != NULL && !b->suspect && x >= 1000000000000LL &&
            jr_card_number((uint64_t)x))
            b->suspect = 1;
        return put_int(b, x);
    }
    if (PyFloat_CheckExact(v)) {
        uint8_t t[8];
        if (put_byte(b, M_FLOAT))
            return -1;
        PyFloat_Pack8(PyFloat_AS_DOUBLE(v), (char *)t, 1);
        return put(b, t, 8);
    }
    return -1;
}

/* The dict's items.  Keys and values are checked here, once: a key that is not
 * a str or a value that is not plain (in a bound or context dict, or added by
 * formatting, which runs Python code) sends the record to the Python path. */
static int put_items(wbuf *b, PyObject *d) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v))
        if (!PyUnicode_CheckExact(k) || put_key(b, k) || put_value(b, v))
            return -1;
    return 0;
}

/* stdlib's exc_info, stack_info and stacklevel: the Python path handles them. */
static int is_special(PyObject *k) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    if ((n != 8 && n != 10) || !PyUnicode_IS_ASCII(k))
        return 0;
    const char *s = (const char *)PyUnicode_DATA(k);
    return n == 8 ? memcmp(s, "exc_info", 8) == 0
                  : memcmp(s, "stack_info", 10) == 0 || memcmp(s, "stacklevel", 10) == 0;
}

/* True if the call's own fields hold a key stdlib gives a meaning: the Python
 * path reads those before formatting. */
static int has_special_key(PyObject *d) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v))
        if (!PyUnicode_Check(k) || is_special(k))
            return 1;
    return 0;
}

/* encode(obj) -> bytes: marshal.dumps(obj, 2) for the subset this module
 * writes (tuples and dicts of plain values).  For tests and tools. */
static PyObject *put_any(wbuf *b, PyObject *obj, int depth);

static PyObject *py_encode(PyObject *module, PyObject *obj) {
    (void)module;
    uint8_t buf[STACK_BUF];
    wbuf b = {buf, buf + sizeof buf, NULL, 0};
    if (put_any(&b, obj, 0) == NULL)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)buf, b.p - buf);
}

static PyObject *put_any(wbuf *b, PyObject *obj, int depth) {
    int rc;
    if (PyTuple_CheckExact(obj) && depth == 0) {
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        rc = put_head(b, M_TUPLE, (uint32_t)n);
        for (Py_ssize_t i = 0; !rc && i < n; i++)
            if (put_any(b, PyTuple_GET_ITEM(obj, i), depth + 1) == NULL)
                return NULL;
    } else if (PyDict_CheckExact(obj) && depth <= 1) {
        rc = put_byte(b, M_DICT) || put_items(b, obj) || put_byte(b, M_NULL);
    } else if (is_plain(obj)) {
        rc = put_value(b, obj);
    } else {
        PyErr_Format(PyExc_TypeError, "encode: %.100s is not written by this encoder",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (rc) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "encode: too large, or not encodable here");
        return NULL;
    }
    return obj;
}

/* ------------------------------------------------------------------------ */
/* the Emitter                                                               */

/* A log call's template, parsed (see plain_plan). */
#define FORMAT_PLAIN_ARGS 8
#define TEMPLATE_BITS 4 /* 16 kept */
#define TEMPLATE_MAX 240
#define TEMPLATE_PASSED 4 /* verdicts kept per template: as many lengths of a counter */

typedef struct {
    PyObject *t;    /* the template (a strong reference), or NULL */
    char plain;     /* its conversions are all "%s" and "%%", at most FORMAT_PLAIN_ARGS */
    uint8_t nconv;  /* how many "%s" */
    uint8_t apart;  /* bit k: argument k starts the message or follows a byte that is no
                       ASCII letter or digit (see clean_arg) */
    uint16_t n;     /* the length of text */
    uint16_t cut[FORMAT_PLAIN_ARGS]; /* where in text each argument goes */
    char text[TEMPLATE_MAX]; /* the template without its conversions, "%%" as "%" */
    /* Shapes of int arguments (see plain_plan) whose message the prefilter
     * passed: a message of the same shape passes too.  0: empty. */
    uint64_t passed[TEMPLATE_PASSED];
    uint8_t passed_next; /* the slot the next verdict takes (round robin) */
    /* How many bytes at the end of each message the prefilter need not look
     * at: the text after the last argument but its first byte, when nothing
     * starts in it (jr_suspect_span), else 0. */
    uint16_t tail;
    /* How many bytes at the start of each message nothing can start at
     * (jr_quiet_prefix of the text before the first argument), or 0. */
    uint16_t head;
} template_entry;

/* A call site's keyword names, checked and encoded (see site_of). */
#define SITE_BITS 4 /* 16 kept */
#define SITE_MAX_KEYS 16
#define SITE_BYTES 256
#define SITE_PAIR_MAX 48
#define SITE_RUN_MAX 128

typedef struct {
    PyObject *names; /* the kwnames tuple (a strong reference), or NULL */
    char plain;      /* every name an exact str, none stdlib's, each passed by the prefilter */
    char trace_id;   /* one is "trace_id" */
    uint8_t count;
    uint16_t end[SITE_MAX_KEYS]; /* where each name's encoding ends in bytes */
    uint8_t bytes[SITE_BYTES];   /* the names as put_key writes them, one after the other */
    /* Each name's last value when that was an ASCII str the prefilter passed
     * (a strong reference): a constant value is written without a look-up. */
    PyObject *clean[SITE_MAX_KEYS];
    /* The name and that value as they are written, when both fit (pair_n 0:
     * they do not, or there is no such value): one copy a constant field. */
    uint8_t pair_n[SITE_MAX_KEYS];
    uint8_t pair[SITE_MAX_KEYS][SITE_PAIR_MAX];
    /* The pairs of the fields from run_from on, one after the other, and the
     * dict's end, while each of those fields keeps its clean value (run_n 0:
     * none): a call site's constant last fields in one copy. */
    uint8_t run_from;
    uint16_t run_n;
    uint8_t run[SITE_RUN_MAX];
} site_entry;

typedef struct {
    PyObject_HEAD
    jr_ring *ring;
    push_fn push;
    scanner scan;
    int check;               /* run the secret prefilter */
    long pid;                /* written into records; logger.py resets it after fork */
    char closed;             /* set by shutdown(): hand every call back */
    Py_ssize_t max_chars;    /* longer messages are truncated by the Python path */
    long console_level;      /* records at or above it are handed back for the console */
    PyObject *keepalive;     /* the Ring whose mapping `ring` points into */
    PyObject *listeners;     /* a list: when not empty, every record is handed back */
    PyObject *context;       /* the ContextVar of log_context() */
    PyObject *format_message; /* the Python path's formatter, for odd arguments */
    PyObject *thread_name;   /* () -> the calling thread's name, cached in tls.name */
    PyObject *tls;           /* the Python path's threading.local, shared with it */
    uint64_t epoch;          /* this Emitter's thread-name cache entries; 0: none (see cached_thread) */
    template_entry templates[1 << TEMPLATE_BITS]; /* parsed templates (see plain_plan) */
    site_entry sites[1 << SITE_BITS];             /* checked keyword names (see site_of) */
    PyObject *clean_name; /* the last logger name the prefilter passed (ASCII), or NULL */
    int digit_reach;      /* the prefilter's jr_prefilter_digit_reach() (see plain_plan) */
} Emitter;

static void site_clear(site_entry *e) {
    e->run_n = 0;
    Py_CLEAR(e->names);
    for (int k = 0; k < SITE_MAX_KEYS; k++) {
        Py_CLEAR(e->clean[k]);
        e->pair_n[k] = 0;
    }
}

static int Emitter_init(Emitter *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"ring", "push", "suspect", "keepalive", "check", "pid", "max_chars",
                            "console_level", "listeners", "context", "format_message",
                            "thread_name", "tls", "digit_reach", "suspect_span", "quiet_prefix", NULL};
    unsigned long long ring, push, suspect;
    PyObject *keepalive, *listeners, *context, *format_message, *thread_name, *tls;
    int check;
    long pid, console_level;
    Py_ssize_t max_chars;
    int digit_reach = JR_DIGIT_REACH_ANY;
    unsigned long long span = 0, quiet = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKOplnlO!OOOO|$iKK:Emitter", names, &ring, &push,
                                     &suspect, &keepalive, &check, &pid, &max_chars,
                                     &console_level, &PyList_Type, &listeners, &context,
                                     &format_message, &thread_name, &tls, &digit_reach, &span, &quiet))
        return -1;
    if (!ring || !push || !suspect) {
        PyErr_SetString(PyExc_ValueError, "Emitter: ring, push and suspect must not be NULL");
        return -1;
    }
    if (!PyContextVar_CheckExact(context) || !PyCallable_Check(format_message) ||
        !PyCallable_Check(thread_name)) {
        PyErr_SetString(PyExc_TypeError,
                        "Emitter: context must be a ContextVar, format_message and "
                        "thread_name callables");
        return -1;
    }
    self->ring = (jr_ring *)(uintptr_t)ring;
    self->push = (push_fn)(uintptr_t)push;
    scanner_clear(&self->scan);
    for (int i = 0; i < (1 << SITE_BITS); i++)
        site_clear(&self->sites[i]); /* their verdicts were for the rules before */
    for (int i = 0; i < (1 << TEMPLATE_BITS); i++)
        Py_CLEAR(self->templates[i].t); /* parsed again: their verdicts too were for those rules */
    Py_CLEAR(self->clean_name);
    /* Out of range: no verdict is kept by shape (a negative reach would
     * claim that a token holds no digit it meets). */
    self->digit_reach = digit_reach >= 0 && digit_reach < JR_DIGIT_REACH_ANY ? digit_reach
                                                                              : JR_DIGIT_REACH_ANY;
    self->scan.ring = self->ring;
    self->scan.suspect = (suspect_fn)(uintptr_t)suspect;
    self->scan.span = (span_fn)(uintptr_t)span;
    self->scan.quiet = (quiet_fn)(uintptr_t)quiet;
    self->check = check;
    self->pid = pid;
    self->max_chars = max_chars;
    self->console_level = console_level;
    Py_XSETREF(self->keepalive, Py_NewRef(keepalive));
    Py_XSETREF(self->listeners, Py_NewRef(listeners));
    Py_XSETREF(self->context, Py_NewRef(context));
    Py_XSETREF(self->format_message, Py_NewRef(format_message));
    Py_XSETREF(self->thread_name, Py_NewRef(thread_name));
    Py_XSETREF(self->tls, Py_NewRef(tls));
    self->epoch = 0;
    if (thread_local_type != NULL && Py_IS_TYPE(tls, thread_local_type))
        self->epoch = ++emitter_epochs;
    return 0;
}

static int Emitter_traverse(Emitter *self, visitproc visit, void *arg) {
    Py_VISIT(self->keepalive);
    Py_VISIT(self->listeners);
    Py_VISIT(self->context);
    Py_VISIT(self->format_message);
    Py_VISIT(self->thread_name);
    Py_VISIT(self->tls);
    return 0;
}

static int Emitter_clear(Emitter *self) {
    self->ring = NULL; /* push() refuses from now on */
    self->epoch = 0;
    scanner_clear(&self->scan);
    Py_CLEAR(self->keepalive);
    Py_CLEAR(self->listeners);
    Py_CLEAR(self->context);
    Py_CLEAR(self->format_message);
    Py_CLEAR(self->thread_name);
    Py_CLEAR(self->tls);
    for (int i = 0; i < (1 << TEMPLATE_BITS); i++)
        Py_CLEAR(self->templates[i].t);
    for (int i = 0; i < (1 << SITE_BITS); i++)
        site_clear(&self->sites[i]);
    Py_CLEAR(self->clean_name);
    return 0;
}

static void Emitter_dealloc(Emitter *self) {
    self->epoch = 0;
    PyObject_GC_UnTrack(self);
    Emitter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The calling thread's name as of its first log call: tls.name, the cache
 * the Python path keeps too (per greenlet where threading is patched). */
static PyObject *thread_object(Emitter *self) {
    PyObject *name = PyObject_GetAttr(self->tls, name_attr);
    if (name != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return name;
    PyErr_Clear();
    return PyObject_CallNoArgs(self->thread_name);
}

/* The same name, kept in C per thread: reading a threading.local costs
 * some 400 instructions, more than the rest of the thread's share of the
 * record.  The entry keeps the name's UTF-8 bytes, not the str, so it owns
 * nothing that a thread's exit or a fork would have to release.  It stands
 * for tls.name of one Emitter (`epoch`, unique to each Emitter_init, so it
 * names the tls and the prefilter rules too) in one Python thread state:
 * tls.name is set once per thread and never changed, so while both match,
 * the bytes are what tls.name holds.  A thread state's id is never reused
 * (a C thread that enters Python again gets a new one), and after fork()
 * the child goes on in the same thread state, with the same tls.name.
 * Only for a tls that is a real threading.local (gevent's is per greenlet,
 * and greenlets share a thread state), and only for a name the prefilter
 * passed (a suspect one sends its records to the Python path anyway). */
#define THREAD_NAME_MAX 120

/* The entry also keeps the record's last three items as they are written
 * (exception None, pid, the thread's name): `pid` says for which pid. */
typedef struct {
    const PyThreadState *ts;
    uint64_t id;
    uint64_t epoch; /* 0: empty */
    long pid;
    uint32_t n;     /* the name's length: its bytes end `end` */
    uint32_t end_n; /* the bytes of `end` */
    uint8_t end[1 + 15 + 5 + THREAD_NAME_MAX];
} thread_entry;

/* initial-exec: one load from the thread pointer, not a __tls_get_addr call
 * (the entry is small enough for the static TLS glibc keeps for dlopen). */
static __thread thread_entry thread_cache __attribute__((tls_model("initial-exec")));

static const thread_entry *cached_thread(const Emitter *self) {
    const thread_entry *e = &thread_cache;
    if (e->epoch != self->epoch || e->epoch == 0)
        return NULL;
    PyThreadState *ts = PyThreadState_Get();
    return e->ts == ts && e->id == ts->id ? e : NULL; /* PyThreadState_GetID(ts), without the call */
}

static void keep_thread(Emitter *self, PyObject *name) {
    if (self->epoch == 0 || !PyUnicode_CheckExact(name))
        return;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(name, &n);
    if (u == NULL) {
        PyErr_Clear(); /* a lone surrogate: its records are the Python path's */
        return;
    }
    if (n > THREAD_NAME_MAX || (self->check && self->scan.suspect(self->ring, (const uint8_t *)u, (size_t)n)))
        return;
    thread_entry *e = &thread_cache;
    PyThreadState *ts = PyThreadState_Get();
    e->epoch = 0;
    wbuf w = {e->end, e->end + sizeof e->end, NULL, 0};
    if (put_byte(&w, M_NONE) || put_int(&w, self->pid) || put_utf8(&w, u, n))
        return;
    e->pid = self->pid;
    e->end_n = (uint32_t)(w.p - e->end);
    e->n = (uint32_t)n;
    e->ts = ts;
    e->id = PyThreadState_GetID(ts);
    e->epoch = self->epoch;
}

/* The record's end: exception None, the pid and the thread's name, which the
 * prefilter passed already; in one copy while the pid is the entry's. */
static int put_end(wbuf *b, const thread_entry *e, long pid) {
    if (e->pid == pid)
        return put(b, e->end, e->end_n);
    return put_byte(b, M_NONE) || put_int(b, pid) || put_utf8(b, e->end + e->end_n - e->n, e->n);
}

/* str(x) for a C long long: its decimal digits into out (room for 20), and
 * their count.  snprintf("%lld") costs several hundred instructions a call. */
static int decimal(char *out, long long x) {
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    static const uint64_t tens[20] = {
        1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
        1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
        100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
        1000000000000000000ull, 10000000000000000000ull};
    uint64_t m = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    /* The count of digits from the bit length (log10(2) ~ 1233/4096): t
     * is floor(log10(2^bits)), and m has t digits when below 10^t (|x| is at
     * most 2^63, so t is at most 19). */
    int t = (64 - __builtin_clzll(m | 1)) * 1233 >> 12;
    int n = t + 1 - ((m | 1) < tens[t]);
    if (x < 0)
        *out++ = '-';
    char *o = out + n;
    while (m >= 100) { /* two digits a step */
        unsigned d = (unsigned)(m % 100) * 2;
        m /= 100;
        *--o = pairs[d + 1];
        *--o = pairs[d];
    }
    if (m >= 10) {
        *--o = pairs[m * 2 + 1];
        *--o = pairs[m * 2];
    } else {
        *--o = (char)('0' + m);
    }
    return n + (x < 0);
}

/* msg % args for the commonest call: an ASCII template whose conversions
 * are all "%s" (and "%%"), one exact ASCII str or exact int (within 64 bits)
 * for each.  plain_plan() checks the call and measures the message;
 * plain_write() then writes it wherever it goes (straight into the record,
 * or into a new str when one is needed), where PyUnicode_Format parses,
 * converts and grows a writer.  Anything else is PyUnicode_Format's
 * (format() below), errors and all.
 *
 * A template is parsed once: its text without the conversions ("%%" as "%")
 * and where each argument goes are kept in the Emitter's `templates`,
 * beside a strong reference to the template (so its address is not reused
 * while the entry stands).  A template that is not plain is kept too, so
 * that it is not parsed again on every call. */
/* An ASCII letter or digit: what the prefilter's "^tok" may not follow
 * (ring.c's is_word). */
static inline int is_word_byte(uint8_t c) {
    return (uint8_t)((c | 32) - 'a') < 26 || (uint8_t)(c - '0') < 10;
}

static int parse_template(template_entry *e, PyObject *msg) {
    e->plain = 0;
    memset(e->passed, 0, sizeof e->passed);
    e->passed_next = 0;
    e->tail = 0;
    e->head = 0;
    if (!PyUnicode_IS_ASCII(msg) || PyUnicode_GET_LENGTH(msg) > TEMPLATE_MAX)
        return -1;
    const char *t = (const char *)PyUnicode_DATA(msg);
    Py_ssize_t tn = PyUnicode_GET_LENGTH(msg);
    unsigned n = 0, nconv = 0;
    for (Py_ssize_t i = 0; i < tn; i++) {
        if (t[i] != '%') {
            e->text[n++] = t[i];
            continue;
        }
        if (++i == tn)
            return -1; /* "incomplete format" */
        if (t[i] == '%') {
            e->text[n++] = '%';
        } else if (t[i] == 's' && nconv < FORMAT_PLAIN_ARGS) {
            e->cut[nconv++] = (uint16_t)n;
        } else {
            return -1;
        }
    }
    e->n = (uint16_t)n;
    e->nconv = (uint8_t)nconv;
    e->apart = 0;
    for (unsigned k = 0; k < nconv; k++) {
        unsigned at = e->cut[k];
        if (at == 0 ? k == 0 : (k == 0 || e->cut[k - 1] < at) && !is_word_byte((uint8_t)e->text[at - 1]))
            e->apart |= (uint8_t)(1u << k);
    }
    e->plain = 1;
    return 0;
}

static template_entry *template_of(Emitter *self, PyObject *msg) {
    size_t i = (size_t)(((uint64_t)(uintptr_t)msg * 0x9E3779B97F4A7C15ull) >> (64 - TEMPLATE_BITS));
    template_entry *e = &self->templates[i];
    if (e->t != msg) {
        parse_template(e, msg);
        Py_XSETREF(e->t, Py_NewRef(msg));
        /* The text after the last argument is every message's end: from its
         * second byte on (its first follows an argument's last), what
         * starts there is found once, here. */
        if (e->plain && self->check && self->scan.span != NULL) {
            size_t at = e->nconv ? e->cut[e->nconv - 1] : e->n, rest = e->n - at;
            if (rest >= 2 && !self->scan.span(self->ring, (const uint8_t *)e->text + at, rest, 1, rest))
                e->tail = (uint16_t)(rest - 1);
            /* The text before the first argument begins every message: the
             * bytes of it where nothing can start, whatever the argument, are
             * skipped by each call's scan. */
            if (self->scan.quiet != NULL && e->nconv)
                e->head = (uint16_t)self->scan.quiet(self->ring, (const uint8_t *)e->text, e->cut[0]);
        }
    }
    return e->plain ? e : NULL;
}

typedef struct {
    template_entry *tpl;
    Py_ssize_t len; /* the message's length (ASCII: as many bytes) */
    uint64_t shape; /* the arguments' shape, or 0: a verdict of this message is not kept */
    const char *piece[FORMAT_PLAIN_ARGS];
    PyObject *text[FORMAT_PLAIN_ARGS]; /* the argument when it is a str, else NULL */
    Py_ssize_t piece_len[FORMAT_PLAIN_ARGS];
    char digits[FORMAT_PLAIN_ARGS][24];
} plain_message;

/* 0 if msg % args is a plain message (pm then describes it), else -1 (no
 * error set).  The arguments are only read: no Python code runs.
 *
 * When every argument is an int of more digits than the prefilter's tokens
 * can take in (ring.h, jr_prefilter_digit_reach), the message's verdict
 * depends on the template, each int's sign and its count of digits only:
 * pm->shape holds those, and the template keeps the shapes whose message
 * passed, so that "user %s logged in" with a counter is scanned once per
 * count of digits, not once per call. */
static int plain_plan(Emitter *self, plain_message *pm, PyObject *msg, PyObject *const *args,
                      Py_ssize_t nargs) {
    template_entry *e = template_of(self, msg);
    if (e == NULL || e->nconv != nargs)
        return -1; /* PyUnicode_Format says what is wrong, if anything */
    Py_ssize_t len = e->n;
    uint64_t shape = 0;
    int by_shape = 1;
    for (Py_ssize_t k = 0; k < nargs; k++) {
        PyObject *a = args[k];
        if (PyUnicode_CheckExact(a) && PyUnicode_IS_ASCII(a)) {
            pm->piece[k] = (const char *)PyUnicode_DATA(a);
            pm->piece_len[k] = PyUnicode_GET_LENGTH(a);
            pm->text[k] = a;
            by_shape = 0;
        } else if (PyLong_CheckExact(a)) {
            long long x;
            if (long_value(a, &x))
                return -1;
            pm->piece[k] = pm->digits[k];
            pm->piece_len[k] = decimal(pm->digits[k], x); /* str(int) */
            pm->text[k] = NULL;
            /* the sign and the count of digits, 6 bits an argument */
            by_shape &= pm->piece_len[k] - (x < 0) > self->digit_reach;
            shape |= (uint64_t)(pm->piece_len[k] | (x < 0) << 5) << (6 * k);
        } else {
            return -1;
        }
        len += pm->piece_len[k];
    }
    pm->tpl = e;
    pm->len = len;
    pm->shape = by_shape ? shape : 0;
    return 0;
}

/* The message plain_plan() measured: pm->len bytes at o. */
static inline void plain_write(const plain_message *pm, char *o) {
    const template_entry *e = pm->tpl;
    if (e->nconv == 1) { /* the common call, without the loop */
        unsigned at = e->cut[0];
        copy_bytes((uint8_t *)o, e->text, at);
        copy_bytes((uint8_t *)o + at, pm->piece[0], (size_t)pm->piece_len[0]);
        copy_bytes((uint8_t *)o + at + pm->piece_len[0], e->text + at, e->n - at);
        return;
    }
    unsigned from = 0;
    for (unsigned k = 0; k < e->nconv; k++) {
        copy_bytes((uint8_t *)o, e->text + from, e->cut[k] - from);
        o += e->cut[k] - from;
        from = e->cut[k];
        copy_bytes((uint8_t *)o, pm->piece[k], (size_t)pm->piece_len[k]);
        o += pm->piece_len[k];
    }
    copy_bytes((uint8_t *)o, e->text + from, e->n - from);
}

/* The message plain_plan() measured, as a new str. */
static PyObject *plain_object(const plain_message *pm) {
    PyObject *out = PyUnicode_New(pm->len, 127);
    if (out != NULL)
        plain_write(pm, (char *)PyUnicode_DATA(out));
    return out;
}

/* msg % args for any other call (args: the call's arguments, or NULL to
 * make that tuple from the n in argv). */
static PyObject *format(Emitter *self, PyObject *msg, PyObject *const *argv, Py_ssize_t n,
                        PyObject *args) {
    if (n == 0)
        return Py_NewRef(msg);
    if (args != NULL) {
        Py_INCREF(args);
    } else if ((args = PyTuple_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(args, i, Py_NewRef(argv[i]));
    } else {
        return NULL;
    }
    PyObject *message = NULL;
    if (!(n == 1 && PyDict_CheckExact(PyTuple_GET_ITEM(args, 0)))) {
        message = PyUnicode_Format(msg, args);
        if (message != NULL || !PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(args);
            return message;
        }
        PyErr_Clear();
    }
    /* "%(name)s" with a mapping, or arguments that do not fit: as the Python path. */
    message = PyObject_CallFunctionObjArgs(self->format_message, msg, args, NULL);
    Py_DECREF(args);
    if (message != NULL && !PyUnicode_CheckExact(message)) {
        PyErr_SetString(PyExc_TypeError, "format_message must return a str");
        Py_CLEAR(message);
    }
    return message;
}

/* A call's own fields: a dict (push(), or a call whose fields were added
 * to), or the keyword arguments of a vectorcall as they came, for which no
 * dict is made unless one is needed (merging, or a record handed back). */
typedef struct {
    PyObject *dict;          /* NULL: the keywords below */
    PyObject *const *values; /* the keywords' values */
    PyObject *names;         /* their names (a tuple of str), or NULL: none */
    site_entry *site;        /* the names checked and encoded already, or NULL */
} call_fields;

/* A vectorcall's keyword names are the call site's constant tuple: checked,
 * scanned and encoded at the first call, then written as they are.  The
 * entry holds the tuple, so its address stands for these names while the
 * entry does.  NULL: names this cache does not take (then each call checks
 * them, and finds whatever sends the record to Python). */
static site_entry *site_of(Emitter *self, PyObject *names) {
    size_t i = (size_t)(((uint64_t)(uintptr_t)names * 0x9E3779B97F4A7C15ull) >> (64 - SITE_BITS));
    site_entry *e = &self->sites[i];
    if (e->names == names)
        return e->plain ? e : NULL;
    site_clear(e);
    e->names = Py_NewRef(names);
    e->plain = 0;
    e->trace_id = 0;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    if (count > SITE_MAX_KEYS)
        return NULL;
    size_t at = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        if (!PyUnicode_CheckExact(name) || is_special(name))
            return NULL;
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(name, &n);
        if (u == NULL) {
            PyErr_Clear();
            return NULL;
        }
        if ((size_t)n + 5 > SITE_BYTES - at ||
            (self->check && suspect_key(&self->scan, u, n)))
            return NULL;
        e->bytes[at] = M_UNICODE;
        store_u32(e->bytes + at + 1, (uint32_t)n);
        memcpy(e->bytes + at + 5, u, (size_t)n);
        at += 5 + (size_t)n;
        e->end[k] = (uint16_t)at;
        if (n == 8 && memcmp(u, "trace_id", 8) == 0)
            e->trace_id = 1;
    }
    e->count = (uint8_t)count;
    e->plain = 1;
    return e;
}

static Py_ssize_t fields_count(const call_fields *f) {
    if (f->dict != NULL)
        return PyDict_GET_SIZE(f->dict);
    return f->names != NULL ? PyTuple_GET_SIZE(f->names) : 0;
}

static int fields_update(PyObject *d, const call_fields *f) {
    if (f->dict != NULL)
        return PyDict_Update(d, f->dict);
    for (Py_ssize_t i = 0; i < fields_count(f); i++)
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(f->names, i), f->values[i]) < 0)
            return -1;
    return 0;
}

/* The call's fields as a dict (a new reference). */
static PyObject *fields_dict(const call_fields *f) {
    if (f->dict != NULL)
        return Py_NewRef(f->dict);
    PyObject *d = PyDict_New();
    if (d != NULL && fields_update(d, f) < 0)
        Py_CLEAR(d);
    return d;
}

static int fields_special(const call_fields *f) {
    if (f->dict != NULL)
        return has_special_key(f->dict);
    if (f->site != NULL)
        return 0;
    for (Py_ssize_t i = 0; i < fields_count(f); i++)
        if (is_special(PyTuple_GET_ITEM(f->names, i)))
            return 1;
    return 0;
}

static PyObject *trace_id_str; /* "trace_id" */

static int dict_has(PyObject *d, PyObject *key) {
    return d != NULL && PyDict_Check(d) && PyDict_Contains(d, key) == 1;
}

/* Whether the call, the bound fields or the context already name a trace_id:
 * then the active span's ids are not added (as logger._add_trace_ids). */
static int names_trace_id(const call_fields *f, PyObject *bound, PyObject *ctx) {
    if (f->dict != NULL ? dict_has(f->dict, trace_id_str) : 0)
        return 1;
    if (f->dict == NULL && f->site != NULL)
        return f->site->trace_id || dict_has(bound, trace_id_str) || dict_has(ctx, trace_id_str);
    if (f->dict == NULL)
        for (Py_ssize_t i = 0; i < fields_count(f); i++)
            if (PyUnicode_Compare(PyTuple_GET_ITEM(f->names, i), trace_id_str) == 0)
                return 1;
    PyErr_Clear();
    return dict_has(bound, trace_id_str) || dict_has(ctx, trace_id_str);
}

/* {**ctx, **bound, **fields} into *out: a new dict, or None when empty; or
 * NULL (returning 0) when there is only the call's keywords, which are then
 * encoded as they came.  -1 on error. */
static int merged_fields(PyObject *ctx, PyObject *bound, const call_fields *f, PyObject **out) {
    int no_ctx = ctx == NULL || (PyDict_CheckExact(ctx) && PyDict_GET_SIZE(ctx) == 0);
    *out = NULL;
    if (no_ctx && PyDict_GET_SIZE(bound) == 0) {
        if (fields_count(f) == 0)
            *out = Py_NewRef(Py_None);
        else if (f->dict != NULL)
            *out = Py_NewRef(f->dict);
        return 0;
    }
    /* Merged as {**ctx} would merge it; what is not plain data is found
     * while encoding and sends the record to Python. */
    PyObject *d = PyDict_New();
    if (d == NULL || (!no_ctx && PyDict_Update(d, ctx) < 0) || PyDict_Update(d, bound) < 0 ||
        fields_update(d, f) < 0) {
        Py_XDECREF(d);
        return -1;
    }
    if (PyDict_GET_SIZE(d) == 0) {
        Py_DECREF(d);
        d = Py_NewRef(Py_None);
    }
    *out = d;
    return 0;
}

/* Whether `v` is an argument of the plain message `pm` that the prefilter
 * need not scan again: the message is written and was scanned before the
 * fields, and a str inside a message that passed passes on its own too.
 * Every rule finds in the message whatever it finds in the str alone (a
 * token and the byte after it, a run of digits, a "/" and the "@" after it
 * are all there), save "^tok" at the str's first byte: alone nothing comes
 * before it, in the message the byte before may be a letter or a digit that
 * hides the token.  So only arguments that start the message or follow some
 * other byte count (the template's `apart`).  A field that repeats the
 * message's argument (user %s ... user_id=) is the common case. */
static inline int clean_arg(const plain_message *pm, PyObject *v) {
    for (unsigned k = 0; k < pm->tpl->nconv; k++)
        if (pm->text[k] == v && (pm->tpl->apart >> k & 1))
            return 1;
    return 0;
}

/* Whether the fields from `from` on have the values their pairs hold. */
static inline int same_values(const site_entry *e, PyObject *const *values, unsigned from) {
    for (unsigned k = from; k < e->count; k++)
        if (values[k] != e->clean[k])
            return 0;
    return 1;
}

/* Keeps the pairs of the longest run of last fields whose values are their
 * clean ones (as just written), for the next call to copy at once. */
static void keep_run(site_entry *e, PyObject *const *values) {
    unsigned k = e->count;
    size_t n = 1; /* M_NULL */
    while (k > 0 && values[k - 1] == e->clean[k - 1] && e->pair_n[k - 1] &&
           n + e->pair_n[k - 1] <= SITE_RUN_MAX) {
        n += e->pair_n[k - 1];
        k--;
    }
    if (k == e->count)
        return;
    uint8_t *o = e->run;
    for (unsigned j = k; j < e->count; j++) {
        memcpy(o, e->pair[j], e->pair_n[j]);
        o += e->pair_n[j];
    }
    *o = M_NULL;
    e->run_from = (uint8_t)k;
    e->run_n = (uint16_t)n;
}

/* The call's keywords as marshal writes the dict they would make (keyword
 * names are unique, in call order, as in that dict).  `pm`: the message,
 * when plain and written before them. */
static int put_keywords(wbuf *b, const call_fields *f, const plain_message *pm) {
    if (put_byte(b, M_DICT))
        return -1;
    if (f->site != NULL) {
        site_entry *e = f->site;
        for (unsigned i = 0, from = 0; i < e->count; from = e->end[i++]) {
            PyObject *v = f->values[i];
            if (i == e->run_from && e->run_n && same_values(e, f->values, i))
                return put(b, e->run, e->run_n);
            if (v == e->clean[i] && e->pair_n[i]) {
                if (put(b, e->pair[i], e->pair_n[i]))
                    return -1;
                continue;
            }
            if (put(b, e->bytes + from, e->end[i] - from))
                return -1;
            /* passed before, or inside the message: ASCII either way */
            if (v == e->clean[i] || (pm != NULL && clean_arg(pm, v))) {
                if (put_utf8(b, PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v)))
                    return -1;
                continue;
            }
            int before = b->suspect;
            if (put_value(b, v))
                return -1;
            if (!before && !b->suspect && PyUnicode_CheckExact(v) && PyUnicode_IS_ASCII(v) &&
                PyUnicode_GET_LENGTH(v) <= CLEAN_MAX) {
                e->run_n = 0; /* it may hold this field's old pair */
                Py_XSETREF(e->clean[i], Py_NewRef(v));
                /* the name's bytes, then the value's, as just written */
                size_t name_n = e->end[i] - from, value_n = 5 + (size_t)PyUnicode_GET_LENGTH(v);
                e->pair_n[i] = 0;
                if (name_n + value_n <= SITE_PAIR_MAX) {
                    memcpy(e->pair[i], b->p - value_n - name_n, name_n + value_n);
                    e->pair_n[i] = (uint8_t)(name_n + value_n);
                }
            }
        }
        if (e->run_n == 0)
            keep_run(e, f->values);
        return put_byte(b, M_NULL);
    }
    for (Py_ssize_t i = 0; i < fields_count(f); i++) {
        PyObject *k = PyTuple_GET_ITEM(f->names, i);
        if (!PyUnicode_CheckExact(k) || put_key(b, k) || put_value(b, f->values[i]))
            return -1;
    }
    return put_byte(b, M_NULL);
}

/* Whether a message of this shape passed the prefilter already. */
static inline int shape_passed(const template_entry *e, uint64_t shape) {
    for (int i = 0; i < TEMPLATE_PASSED; i++)
        if (e->passed[i] == shape)
            return 1;
    return 0;
}

/* The message's verdict: from its template's kept ones, or the scan of
 * what starts between the template's quiet head and its clean tail (and
 * kept when it passes and its shape says what it depends on). */
static int suspect_plain(scanner *sc, const plain_message *pm, const uint8_t *u) {
    const template_entry *t = pm->tpl;
    if (pm->shape != 0 && shape_passed(t, pm->shape))
        return 0;
    if (t->head || t->tail ? sc->span(sc->ring, u, (size_t)pm->len, t->head, (size_t)(pm->len - t->tail))
                           : sc->suspect(sc->ring, u, (size_t)pm->len))
        return 1;
    if (pm->shape != 0) {
        template_entry *e = pm->tpl;
        e->passed[e->passed_next] = pm->shape;
        e->passed_next = (uint8_t)((e->passed_next + 1) % TEMPLATE_PASSED);
    }
    return 0;
}

/* The message of a plain call, written into the record as put_text would
 * write the str plain_object() makes, without making it. */
static int put_plain(wbuf *b, const plain_message *pm) {
    if (pm->len > INT32_MAX || b->end - b->p < 5 + pm->len)
        return -1;
    b->p[0] = M_UNICODE;
    store_u32(b->p + 1, (uint32_t)pm->len);
    b->p += 5;
    plain_write(pm, (char *)b->p);
    if (b->scan != NULL && !b->suspect && suspect_plain(b->scan, pm, b->p))
        b->suspect = 1;
    b->p += pm->len;
    return 0;
}

/* The logger's name: most calls repeat the last one, whose verdict is kept
 * beside a reference to it (nothing is suspect before it in a record). */
static int put_name(Emitter *self, wbuf *b, PyObject *name) {
    if (name == self->clean_name)
        return put_utf8(b, PyUnicode_DATA(name), PyUnicode_GET_LENGTH(name));
    if (put_str(b, name))
        return -1;
    if (!b->suspect && PyUnicode_IS_ASCII(name))
        Py_XSETREF(self->clean_name, Py_NewRef(name));
    return 0;
}

/* One log call, after its level check: see push() below for what it returns.
 * The template's arguments are argv[0..nargs) (args: the same as a tuple, or
 * NULL).  `ids` is the active span's {"trace_id", "span_id"} (or NULL), added
 * to the call's fields unless a trace_id is named already, as _add_trace_ids
 * does. */
static PyObject *emit(Emitter *self, long level, PyObject *name, PyObject *bound, PyObject *msg,
                      PyObject *const *argv, Py_ssize_t nargs, PyObject *args, const call_fields *f,
                      PyObject *ids) {
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Emitter.push: the Emitter is not initialised");
        return NULL;
    }
    call_fields g = *f;
    if (g.dict == NULL && g.names != NULL && PyTuple_GET_SIZE(g.names))
        g.site = site_of(self, g.names);
    if (self->closed || !PyUnicode_CheckExact(msg) || !PyUnicode_CheckExact(name) ||
        !PyDict_CheckExact(bound) || fields_special(&g))
        Py_RETURN_NOTIMPLEMENTED;
    /* From here on the call has side effects (formatting runs __str__), so
     * every outcome returns the record rather than NotImplemented.  The
     * context and this setup's state are read after formatting, as the
     * Python path reads them.  A plain message is written straight into the
     * record; its str is made only if the record is handed back. */
    PyObject *ctx = NULL, *traced = NULL, *message = NULL;
    plain_message pm;
    int plain = nargs > 0 && plain_plan(self, &pm, msg, argv, nargs) == 0;
    if (!plain)
        message = format(self, msg, argv, nargs, args);
    const thread_entry *te = plain || message ? cached_thread(self) : NULL;
    PyObject *thread = te != NULL || !(plain || message) ? NULL : thread_object(self);
    if (thread != NULL)
        keep_thread(self, thread);
    if (te != NULL)
        thread = Py_NewRef(Py_None); /* a stand-in until the record is handed back */
    if (thread != NULL && PyContextVar_Get(self->context, NULL, &ctx) < 0)
        Py_CLEAR(thread);
    if (thread != NULL && ids != NULL && PyDict_Check(ids) && !names_trace_id(&g, bound, ctx)) {
        traced = fields_dict(&g);
        if (traced == NULL || PyDict_Update(traced, ids) < 0)
            Py_CLEAR(thread);
        g.dict = traced;
        g.site = NULL;
    }
    /* {**ctx, **bound, **fields} */
    PyObject *merged = NULL;
    int failed = thread == NULL || merged_fields(ctx, bound, &g, &merged) < 0;
    Py_XDECREF(ctx);
    if (failed) {
        Py_XDECREF(traced);
        Py_XDECREF(message);
        Py_XDECREF(thread);
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long ts = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;

    uint8_t buf[STACK_BUF];
    wbuf b = {buf, buf + sizeof buf, self->check ? &self->scan : NULL, 0};
    /* The template itself, when there are no arguments: the same object call
     * after call, so its verdict is kept like a constant field value's. */
    int pushed =
        !self->closed && (plain ? pm.len : PyUnicode_GET_LENGTH(message)) <= self->max_chars &&
        (te != NULL || PyUnicode_CheckExact(thread)) &&
        !(put_record_start(&b, ts, level) || put_name(self, &b, name) ||
          (plain ? put_plain(&b, &pm) : put_text(&b, message, nargs ? FORGET : KEEP_VALUE, 0)) ||
          (merged == NULL   ? put_keywords(&b, &g, plain ? &pm : NULL)
           : merged != Py_None ? (put_byte(&b, M_DICT) || put_items(&b, merged) || put_byte(&b, M_NULL))
                               : put_byte(&b, M_NONE)) ||
          (te != NULL ? put_end(&b, te, self->pid)
                      : put_byte(&b, M_NONE) || put_int(&b, self->pid) || put_str(&b, thread)));
    size_t len = (size_t)(b.p - buf);
    if (b.suspect)
        pushed = 0;
    /* JR_POLICY_TRY: never wait here, with the GIL held; a full ring goes
     * back to the Python path, whose push waits with the GIL released. */
    if (pushed && self->push(self->ring, buf, len, JR_POLICY_TRY, 0) != JR_OK)
        pushed = 0;
    PyObject *result = Py_None;
    if (!pushed || level >= self->console_level || PyList_GET_SIZE(self->listeners)) {
        if (message == NULL)
            message = plain_object(&pm);
        if (te != NULL && message != NULL) {
            Py_SETREF(thread, thread_object(self));
            if (thread == NULL)
                Py_CLEAR(message);
        }
        PyObject *fields = message == NULL ? NULL : merged != NULL ? Py_NewRef(merged) : fields_dict(&g);
        PyObject *record = fields == NULL ? NULL
                           : Py_BuildValue("(iLlOONOlO)", RECORD_FORMAT, ts, level, name, message,
                                           fields, Py_None, self->pid, thread);
        result = record ? Py_BuildValue("(ON)", pushed ? Py_True : Py_False, record) : NULL;
    } else {
        Py_INCREF(result);
    }
    Py_XDECREF(merged);
    Py_XDECREF(traced);
    Py_XDECREF(message);
    Py_XDECREF(thread);
    return result;
}

/* push(level, name, bound, msg, args, fields)
 *   -> None: pushed, nothing left to do;
 *   -> (pushed, record): the Python path finishes (pushes it if not pushed,
 *      hands it to the console and listeners);
 *   -> NotImplemented: a call the Python path treats differently from its
 *      start (a template that is not a str, stdlib's exc_info and the like,
 *      a level beyond a C long); it does the whole call. */
static PyObject *Emitter_push(Emitter *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 6) {
        PyErr_SetString(PyExc_TypeError, "push(level, name, bound, msg, args, fields)");
        return NULL;
    }
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Emitter.push: the Emitter is not initialised");
        return NULL;
    }
    int overflow = 0;
    long level = PyLong_CheckExact(argv[0]) ? PyLong_AsLongAndOverflow(argv[0], &overflow) : 0;
    if (level == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || !PyLong_CheckExact(argv[0]) || !PyTuple_CheckExact(argv[4]) ||
        !PyDict_CheckExact(argv[5]))
        Py_RETURN_NOTIMPLEMENTED;
    call_fields f = {argv[5], NULL, NULL, NULL};
    PyObject *args = argv[4];
    return emit(self, level, argv[1], argv[2], argv[3], &PyTuple_GET_ITEM(args, 0),
                PyTuple_GET_SIZE(args), args, &f, NULL);
}

static PyMethodDef Emitter_methods[] = {
    {"push", (PyCFunction)(void (*)(void))Emitter_push, METH_FASTCALL,
     "push(level, name, bound, msg, args, fields): log one call (see _speedups.c)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Emitter_members[] = {
    {"pid", T_LONG, offsetof(Emitter, pid), 0, "the pid written into records"},
    {"closed", T_BOOL, offsetof(Emitter, closed), 0,
     "True once its setup is shut down: push hands every call back"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EmitterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "janus_utils._speedups.Emitter",
    .tp_basicsize = sizeof(Emitter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The common log call, formatted, encoded and pushed into a ring in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Emitter_init,
    .tp_dealloc = (destructor)Emitter_dealloc,
    .tp_traverse = (traverseproc)Emitter_traverse,
    .tp_clear = (inquiry)Emitter_clear,
    .tp_methods = Emitter_methods,
    .tp_members = Emitter_members,
};


/* ------------------------------------------------------------------------ */
/* the Logger's level methods                                                */

/* janus_utils.logger.Logger's base: its level methods are these, so that a
 * call below the level returns before any argument is packed, and an enabled
 * call goes from the caller's arguments straight to the encoder above.
 * Everything else is the Python path's, in logger.py: a call C hands back
 * (NotImplemented), exception(), log() with a level that is not an int, any
 * call before configure() or with the C encoder off, and every call at or
 * above `python_from` (set_python_from(): a level whose records need what
 * only Python gives, such as the caller's frame). */

static struct {
    Emitter *emitter;         /* the configured setup's encoder, or NULL */
    PyObject *trace_var;      /* OpenTelemetry's context variable, or NULL */
    PyObject *trace_current;  /* or () -> that context, when it is no ContextVar */
    PyObject *trace_ids;      /* () -> {"trace_id", "span_id"} of the active span, or None */
    PyObject *level_call;     /* (logger, level, msg, *args, **fields): the Python path */
    PyObject *exception_call; /* (logger, msg, *args, **fields): exception() */
    PyObject *log_call;       /* (logger, level, msg, *args, **fields): log(), level not an int */
    PyObject *finish;         /* (result): completes a record C hands back (console, listeners) */
    PyObject *report;         /* (exception): a log call must never raise into the application */
    long python_from;         /* calls at this level and above take the Python path */
} path = {.python_from = LONG_MAX};

typedef struct {
    PyObject_HEAD
    PyObject *name;      /* str */
    PyObject *bound;     /* dict: bind()'s fields */
    PyObject *level_obj; /* the level as given (an int) */
    long level;          /* the same, clamped to a C long */
    PyObject *weakrefs;
} LoggerObject;

/* fn(logger[, level], *args, **kwargs) with the caller's own argument vector. */
static PyObject *to_python(PyObject *fn, LoggerObject *self, PyObject *level, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames) {
    if (fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Logger: janus_utils.logger has not set the Python path");
        return NULL;
    }
    PyObject *small[12], **stack = small;
    Py_ssize_t lead = level != NULL ? 2 : 1;
    Py_ssize_t all = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    if (lead + all > (Py_ssize_t)(sizeof small / sizeof *small)) {
        stack = PyMem_Malloc((size_t)(lead + all) * sizeof *stack);
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = (PyObject *)self;
    if (level != NULL)
        stack[1] = level;
    if (all)
        memcpy(stack + lead, args, (size_t)all * sizeof *args);
    PyObject *result = PyObject_Vectorcall(fn, stack, (size_t)(lead + nargs), kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return result;
}

/* An exception in the C path goes where the Python path sends its own: to
 * report(), never to the caller (KeyboardInterrupt and the like do). */
static PyObject *reported(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception) || path.report == NULL)
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *done = value != NULL ? PyObject_CallOneArg(path.report, value) : NULL;
    if (done == NULL)
        PyErr_Clear();
    Py_XDECREF(done);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_RETURN_NONE;
}

/* The active span's ids (a new reference), or NULL: no span (no error set),
 * or an error. */
static PyObject *active_trace_ids(void) {
    PyObject *ctx = NULL;
    if (path.trace_var != NULL) {
        if (PyContextVar_Get(path.trace_var, NULL, &ctx) < 0)
            return NULL;
    } else if (path.trace_current != NULL) {
        ctx = PyObject_CallNoArgs(path.trace_current);
    }
    if (ctx == NULL)
        return NULL;
    int active = PyObject_IsTrue(ctx); /* the empty context: no span, nothing to add */
    Py_DECREF(ctx);
    if (active <= 0)
        return NULL;
    PyObject *ids = PyObject_CallNoArgs(path.trace_ids);
    if (ids == Py_None)
        Py_CLEAR(ids);
    return ids;
}

/* A call at `level`, which the logger's level lets through. */
static PyObject *log_at(LoggerObject *self, long level, PyObject *level_obj, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames) {
    Emitter *em = path.emitter;
    if (em == NULL || em->closed || level >= path.python_from || nargs < 1 || self->name == NULL ||
        self->bound == NULL)
        goto python;
    Py_INCREF(em); /* formatting runs Python code, which may configure() anew */
    PyObject *ids = NULL, *result = NULL;
    if (path.trace_ids != NULL) {
        ids = active_trace_ids();
        if (ids == NULL && PyErr_Occurred())
            goto failed;
    }
    call_fields f = {NULL, args + nargs, kwnames, NULL};
    result = emit(em, level, self->name, self->bound, args[0], args + 1, nargs - 1, NULL, &f, ids);
failed:
    Py_XDECREF(ids);
    Py_DECREF(em);
    if (result == NULL)
        return reported();
    if (result == Py_None)
        return result;
    if (result == Py_NotImplemented) {
        Py_DECREF(result);
        goto python;
    }
    PyObject *done = PyObject_CallOneArg(path.finish, result);
    Py_DECREF(result);
    if (done == NULL)
        return reported();
    Py_DECREF(done);
    Py_RETURN_NONE;
python:
    if (level_obj != NULL)
        return to_python(path.level_call, self, level_obj, args, nargs, kwnames);
    level_obj = PyLong_FromLong(level);
    if (level_obj == NULL)
        return NULL;
    PyObject *out = to_python(path.level_call, self, level_obj, args, nargs, kwnames);
    Py_DECREF(level_obj);
    return out;
}

#define LEVEL_METHOD(fname, LEVEL)                                                              \
    static PyObject *Logger_##fname(LoggerObject *self, PyObject *const *args, Py_ssize_t nargs, \
                                    PyObject *kwnames) {                                        \
        if (self->level > (LEVEL))                                                              \
            Py_RETURN_NONE;                                                                     \
        return log_at(self, (LEVEL), NULL, args, nargs, kwnames);                               \
    }

/* The level table's numbers (janus_utils/_levels.py; logger.py checks them). */
LEVEL_METHOD(trace, 5)
LEVEL_METHOD(debug, 10)
LEVEL_METHOD(info, 20)
LEVEL_METHOD(warning, 30)
LEVEL_METHOD(error, 40)
LEVEL_METHOD(critical, 50)

static PyObject *Logger_exception(LoggerObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    if (self->level > 40)
        Py_RETURN_NONE;
    return to_python(path.exception_call, self, NULL, args, nargs, kwnames);
}

static PyObject *Logger_log(LoggerObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
    if (nargs >= 1 && PyLong_CheckExact(args[0])) {
        int overflow;
        long level = PyLong_AsLongAndOverflow(args[0], &overflow);
        if (!overflow && level != LONG_MAX && !(level == -1 && PyErr_Occurred())) {
            if (level < self->level)
                Py_RETURN_NONE;
            return log_at(self, level, args[0], args + 1, nargs - 1, kwnames);
        }
        PyErr_Clear();
    }
    return to_python(path.log_call, self, NULL, args, nargs, kwnames);
}

static PyObject *Logger_get_level(LoggerObject *self, void *closure) {
    (void)closure;
    if (self->level_obj == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_level");
        return NULL;
    }
    return Py_NewRef(self->level_obj);
}

static int Logger_set_level(LoggerObject *self, PyObject *value, void *closure) {
    (void)closure;
    if (value == NULL || !PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "a logger's level is an int");
        return -1;
    }
    int overflow;
    long level = PyLong_AsLongAndOverflow(value, &overflow);
    if (level == -1 && PyErr_Occurred())
        return -1;
    /* Beyond a C long: every call from C is below it (or above it), as in Python. */
    self->level = overflow > 0 ? LONG_MAX : overflow < 0 ? LONG_MIN : level;
    Py_XSETREF(self->level_obj, Py_NewRef(value));
    return 0;
}

static int Logger_traverse(LoggerObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->name);
    Py_VISIT(self->bound);
    Py_VISIT(self->level_obj);
    return 0; /* the Python subclass's type is visited by its own traverse (subtype_traverse) */
}

static int Logger_clear(LoggerObject *self) {
    Py_CLEAR(self->name);
    Py_CLEAR(self->bound);
    Py_CLEAR(self->level_obj);
    return 0;
}

/* Called by the Python subclass's dealloc (subtype_dealloc), which drops
 * the reference to its heap type itself. */
static void Logger_dealloc(LoggerObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    Logger_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Logger_methods[] = {
    {"trace", (PyCFunction)(void (*)(void))Logger_trace, METH_FASTCALL | METH_KEYWORDS,
     "Record at TRACE: printf-style *args, keywords are fields."},
    {"debug", (PyCFunction)(void (*)(void))Logger_debug, METH_FASTCALL | METH_KEYWORDS,
     "Record at DEBUG: printf-style *args, keywords are fields."},
    {"info", (PyCFunction)(void (*)(void))Logger_info, METH_FASTCALL | METH_KEYWORDS,
     "Record at INFO: printf-style *args, keywords are fields."},
    {"warning", (PyCFunction)(void (*)(void))Logger_warning, METH_FASTCALL | METH_KEYWORDS,
     "Record at WARNING: printf-style *args, keywords are fields."},
    {"warn", (PyCFunction)(void (*)(void))Logger_warning, METH_FASTCALL | METH_KEYWORDS,
     "Record at WARNING: printf-style *args, keywords are fields."},
    {"error", (PyCFunction)(void (*)(void))Logger_error, METH_FASTCALL | METH_KEYWORDS,
     "Record at ERROR: printf-style *args, keywords are fields."},
    {"critical", (PyCFunction)(void (*)(void))Logger_critical, METH_FASTCALL | METH_KEYWORDS,
     "Record at CRITICAL: printf-style *args, keywords are fields."},
    {"exception", (PyCFunction)(void (*)(void))Logger_exception, METH_FASTCALL | METH_KEYWORDS,
     "Record at ERROR with the traceback of the exception being handled."},
    {"log", (PyCFunction)(void (*)(void))Logger_log, METH_FASTCALL | METH_KEYWORDS,
     "Record at *level* (a number or a name); an unknown level is recorded at ERROR."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Logger_members[] = {
    {"name", T_OBJECT_EX, offsetof(LoggerObject, name), 0, "the logger's name"},
    {"_bound", T_OBJECT_EX, offsetof(LoggerObject, bound), 0, "the fields bind() added"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Logger_getset[] = {
    {"_level", (getter)Logger_get_level, (setter)Logger_set_level, "the lowest level recorded", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LoggerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "janus_utils._speedups.Logger",
    .tp_basicsize = sizeof(LoggerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "janus_utils.logger.Logger's level methods, in C.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Logger_dealloc,
    .tp_traverse = (traverseproc)Logger_traverse,
    .tp_clear = (inquiry)Logger_clear,
    .tp_weaklistoffset = offsetof(LoggerObject, weakrefs),
    .tp_methods = Logger_methods,
    .tp_members = Logger_members,
    .tp_getset = Logger_getset,
};

static int callable_or_none(PyObject *o, const char *what) {
    if (o != Py_None && !PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None", what);
        return -1;
    }
    return 0;
}

static PyObject *py_set_python_path(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *fn[5];
    if (!PyArg_ParseTuple(args, "OOOOO:set_python_path", &fn[0], &fn[1], &fn[2], &fn[3], &fn[4]))
        return NULL;
    for (int i = 0; i < 5; i++)
        if (!PyCallable_Check(fn[i])) {
            PyErr_SetString(PyExc_TypeError, "set_python_path takes five callables");
            return NULL;
        }
    Py_XSETREF(path.level_call, Py_NewRef(fn[0]));
    Py_XSETREF(path.exception_call, Py_NewRef(fn[1]));
    Py_XSETREF(path.log_call, Py_NewRef(fn[2]));
    Py_XSETREF(path.finish, Py_NewRef(fn[3]));
    Py_XSETREF(path.report, Py_NewRef(fn[4]));
    Py_RETURN_NONE;
}

static PyObject *py_set_emitter(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *emitter, *trace_current, *trace_ids;
    if (!PyArg_ParseTuple(args, "OOO:set_emitter", &emitter, &trace_current, &trace_ids))
        return NULL;
    if (emitter != Py_None && !PyObject_TypeCheck(emitter, &EmitterType)) {
        PyErr_SetString(PyExc_TypeError, "set_emitter: an Emitter or None");
        return NULL;
    }
    int is_var = PyContextVar_CheckExact(trace_current);
    if ((!is_var && callable_or_none(trace_current, "trace_current") < 0) ||
        callable_or_none(trace_ids, "trace_ids") < 0)
        return NULL;
    if ((trace_current == Py_None) != (trace_ids == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "set_emitter: trace_current and trace_ids go together");
        return NULL;
    }
    Py_XSETREF(path.emitter, emitter == Py_None ? NULL : (Emitter *)Py_NewRef(emitter));
    Py_CLEAR(path.trace_var);
    Py_CLEAR(path.trace_current);
    Py_CLEAR(path.trace_ids);
    if (trace_ids != Py_None) {
        if (is_var)
            path.trace_var = Py_NewRef(trace_current);
        else
            path.trace_current = Py_NewRef(trace_current);
        path.trace_ids = Py_NewRef(trace_ids);
    }
    Py_RETURN_NONE;
}

static PyObject *py_set_python_from(PyObject *module, PyObject *level) {
    (void)module;
    if (!PyLong_Check(level)) {
        PyErr_SetString(PyExc_TypeError, "set_python_from: a level (int)");
        return NULL;
    }
    int overflow;
    long lv = PyLong_AsLongAndOverflow(level, &overflow);
    if (lv == -1 && PyErr_Occurred())
        return NULL;
    long previous = path.python_from;
    path.python_from = overflow > 0 ? LONG_MAX : overflow < 0 ? LONG_MIN : lv;
    return PyLong_FromLong(previous);
}

/* ------------------------------------------------------------------------ */
/* the flusher's decoder                                                     */

/* decode_rows(raw, count, fallback) -> list of rows, as _record.decode_row
 * makes them (the columns of _schema.COLUMNS).  raw is what jr_read wrote:
 * count records, each a 16-byte head (seq u64, length u32, 4 spare bytes)
 * and its payload.  A payload this parser does not take whole (another
 * format, nested or foreign values, text that needs cleaning, a repeated
 * key) is handed to fallback(payload_bytes), the Python decode_row, so the
 * rows are the same either way; tests/test_speedups.py checks that. */

#define MAX_FIELDS 32

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} rbuf;

/* A parsed value: kind is a marshal type code; for M_UNICODE s/n point into
 * the payload; for M_INT/M_LONG i holds it; for M_FLOAT d does. */
typedef struct {
    char kind;
    const char *s;
    Py_ssize_t n;
    long long i;
    double d;
} val;

static int get_u32(rbuf *r, uint32_t *out) {
    if (r->end - r->p < 4)
        return -1;
    *out = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
           (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

/* One plain value; -1 for anything else (the record then falls back). */
static int get_val(rbuf *r, val *v) {
    if (r->p >= r->end)
        return -1;
    v->kind = (char)*r->p++;
    uint32_t u;
    switch (v->kind) {
    case M_NONE:
    case M_TRUE:
    case M_FALSE:
        return 0;
    case M_INT:
        if (get_u32(r, &u))
            return -1;
        v->i = (int32_t)u;
        return 0;
    case M_LONG: {
        if (get_u32(r, &u))
            return -1;
        int32_t n = (int32_t)u;
        uint32_t digits = n < 0 ? (uint32_t)0 - (uint32_t)n : (uint32_t)n;
        if (digits == 0 || digits > 5 || r->end - r->p < 2 * (Py_ssize_t)digits)
            return -1;
        uint64_t m = 0;
        for (uint32_t k = 0; k < digits; k++) {
            uint64_t d = (uint64_t)r->p[2 * k] | (uint64_t)r->p[2 * k + 1] << 8;
            if (d >= 1u << 15 || (k == 4 && d > 0xf) || (k == digits - 1 && d == 0))
                return -1; /* over 64 bits, or not normalised (marshal refuses that) */
            m |= d << (15 * k);
        }
        r->p += 2 * digits;
        if (n > 0 ? m > (uint64_t)INT64_MAX : m > (uint64_t)INT64_MAX + 1)
            return -1;
        v->i = n > 0 ? (long long)m : (long long)((uint64_t)0 - m);
        return 0;
    }
    case M_FLOAT:
        if (r->end - r->p < 8)
            return -1;
        v->d = PyFloat_Unpack8((const char *)r->p, 1);
        r->p += 8;
        return 0;
    case M_UNICODE:
        if (get_u32(r, &u) || (uint64_t)(r->end - r->p) < u)
            return -1;
        v->s = (const char *)r->p;
        v->n = (Py_ssize_t)u;
        r->p += u;
        return 0;
    default:
        return -1;
    }
}

/* _text() of a str: kept when it is UTF-8 without NUL; else the record falls back. */
static PyObject *text_of(const char *s, Py_ssize_t n) {
    if (memchr(s, 0, (size_t)n) != NULL)
        return NULL;
    PyObject *o = PyUnicode_DecodeUTF8(s, n, NULL);
    if (o == NULL)
        PyErr_Clear(); /* a lone surrogate, kept by surrogatepass: Python cleans it */
    return o;
}

static int fmt_int(char *out, long long i) { return snprintf(out, 24, "%lld", i); }

/* str(v) for a known field (user_id, ...): None stays None. */
static PyObject *known_text(const val *v) {
    char num[24];
    switch (v->kind) {
    case M_NONE:
        return Py_NewRef(Py_None);
    case M_TRUE:
        return PyUnicode_FromString("True");
    case M_FALSE:
        return PyUnicode_FromString("False");
    case M_INT:
    case M_LONG:
        return PyUnicode_FromStringAndSize(num, fmt_int(num, v->i));
    case M_FLOAT: {
        char *r = PyOS_double_to_string(v->d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (r == NULL)
            return NULL;
        PyObject *o = PyUnicode_FromString(r);
        PyMem_Free(r);
        return o;
    }
    default:
        return text_of(v->s, v->n);
    }
}

typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = PyMem_Realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* A JSON string as json.dumps(ensure_ascii=False) writes it: quote, backslash
 * and control characters escaped, everything else as is. */
static int json_str(sbuf *b, const char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (sb_put(b, "\"", 1))
        return -1;
    Py_ssize_t run = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (sb_put(b, s + run, (size_t)(k - run)))
            return -1;
        run = k + 1;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 0xf];
            en = 6;
        }
        if (sb_put(b, e, en))
            return -1;
    }
    if (sb_put(b, s + run, (size_t)(n - run)))
        return -1;
    return sb_put(b, "\"", 1);
}

/* A JSON value as logger._fields_json writes it; -1 also for NaN and the
 * infinities, which it refuses (the record falls back). */
static int json_val(sbuf *b, const val *v) {
    char num[24];
    switch (v->kind) {
    case M_NONE:
        return sb_put(b, "null", 4);
    case M_TRUE:
        return sb_put(b, "true", 4);
    case M_FALSE:
        return sb_put(b, "false", 5);
    case M_INT:
    case M_LONG:
        return sb_put(b, num, (size_t)fmt_int(num, v->i));
    case M_FLOAT: {
        if (!isfinite(v->d))
            return -1;
        char *r = PyOS_double_to_string(v->d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (r == NULL) {
            PyErr_Clear();
            return -1;
        }
        int rc = sb_put(b, r, strlen(r));
        PyMem_Free(r);
        return rc;
    }
    default:
        return json_str(b, v->s, v->n);
    }
}

#define NKNOWN 5 /* the fields with a column of their own */
static const char *const known_keys[NKNOWN] = {"user_id", "agent_id", "request_id", "trace_id",
                                          "span_id"};

static int known_index(const val *k) {
    for (int i = 0; i < NKNOWN; i++)
        if ((size_t)k->n == strlen(known_keys[i]) && memcmp(k->s, known_keys[i], (size_t)k->n) == 0)
            return i;
    return -1;
}

/* The last record's text in one column (logger, thread, a known field): most batches repeat a few. */
typedef struct {
    const char *s; /* into the buffer being decoded */
    Py_ssize_t n;
    PyObject *o;
} name_cache;

static PyObject *cached_text(name_cache *c, const val *v) {
    if (c->o != NULL && c->n == v->n && memcmp(c->s, v->s, (size_t)v->n) == 0)
        return Py_NewRef(c->o);
    PyObject *o = text_of(v->s, v->n);
    if (o != NULL) {
        c->s = v->s, c->n = v->n;
        Py_XSETREF(c->o, Py_NewRef(o));
    }
    return o;
}

/* What decoding one batch keeps from record to record.  Records of a batch
 * repeat most of their text (logger and thread names, field values such as
 * an agent or a client address, the fields JSON): a value the same as the
 * last record's is the last record's str, not a new one (rows are built
 * faster and freed faster, and the word signature of a fields JSON seen
 * last is not computed again, see words_memo). */
typedef struct {
    sbuf json;               /* the fields JSON being written */
    name_cache names;        /* logger */
    name_cache threads;      /* thread */
    name_cache known[NKNOWN]; /* str values of known_keys */
    sbuf last_json;          /* the last record's fields JSON, */
    PyObject *last_fields;   /* and its str (NULL: none yet) */
} decode_state;

static void decode_state_clear(decode_state *st) {
    PyMem_Free(st->json.p);
    PyMem_Free(st->last_json.p);
    Py_XDECREF(st->names.o);
    Py_XDECREF(st->threads.o);
    for (int k = 0; k < NKNOWN; k++)
        Py_XDECREF(st->known[k].o);
    Py_XDECREF(st->last_fields);
}

/* The str of the JSON in st->json: the last record's when the bytes are the same. */
static PyObject *fields_str(decode_state *st) {
    sbuf *json = &st->json, *last = &st->last_json;
    if (st->last_fields != NULL && last->len == json->len && memcmp(last->p, json->p, json->len) == 0)
        return Py_NewRef(st->last_fields);
    PyObject *o = PyUnicode_DecodeUTF8(json->p, (Py_ssize_t)json->len, NULL);
    if (o == NULL)
        return NULL;
    last->len = 0;
    if (sb_put(last, json->p, json->len) == 0)
        Py_XSETREF(st->last_fields, Py_NewRef(o));
    else
        Py_CLEAR(st->last_fields); /* no room to remember it: the next one is decoded */
    return o;
}

/* One payload as a row of width slots (DECODED of them filled, the rest
 * NULL for the caller to fill), or NULL (no error set) to fall back. */
#define DECODED 13 /* _schema.DECODED_COLUMNS */
static PyObject *decode_one(const uint8_t *p, Py_ssize_t n, decode_state *st, Py_ssize_t width) {
    sbuf *json = &st->json;
    rbuf r = {p, p + n};
    uint32_t items;
    val fmt, ts, level, name, message, exc, pid, thread;
    val keys[MAX_FIELDS], vals[MAX_FIELDS];
    int nfields = -1; /* -1: fields is None */
    if (r.p >= r.end || *r.p++ != M_TUPLE || get_u32(&r, &items) || items != RECORD_ITEMS ||
        get_val(&r, &fmt) || fmt.kind != M_INT || fmt.i != RECORD_FORMAT || get_val(&r, &ts) ||
        get_val(&r, &level) || get_val(&r, &name) || get_val(&r, &message))
        return NULL;
    if (r.p < r.end && *r.p == M_DICT) {
        r.p++;
        nfields = 0;
        for (;;) {
            if (r.p >= r.end)
                return NULL;
            if (*r.p == M_NULL) {
                r.p++;
                break;
            }
            if (nfields == MAX_FIELDS || get_val(&r, &keys[nfields]) ||
                keys[nfields].kind != M_UNICODE || get_val(&r, &vals[nfields]))
                return NULL;
            nfields++;
        }
    } else if (r.p >= r.end || *r.p++ != M_NONE) {
        return NULL;
    }
    if (get_val(&r, &exc) || get_val(&r, &pid) || get_val(&r, &thread) || r.p != r.end)
        return NULL;
    /* What decode_row keeps as is; anything else it repairs, and so does it. */
    if ((ts.kind != M_INT && ts.kind != M_LONG) || (level.kind != M_INT && level.kind != M_LONG) ||
        level.i < 0 || (pid.kind != M_INT && pid.kind != M_LONG) || pid.i < 0 ||
        (name.kind != M_UNICODE && name.kind != M_NONE) ||
        (message.kind != M_UNICODE && message.kind != M_NONE) ||
        (exc.kind != M_UNICODE && exc.kind != M_NONE) ||
        (thread.kind != M_UNICODE && thread.kind != M_NONE))
        return NULL;
    for (int a = 0; a < nfields; a++) /* a repeated key: marshal.loads keeps the last value */
        for (int b = a + 1; b < nfields; b++)
            if (keys[a].n == keys[b].n && memcmp(keys[a].s, keys[b].s, (size_t)keys[a].n) == 0)
                return NULL;

    PyObject *known[NKNOWN] = {NULL};
    PyObject *row = PyTuple_New(width), *fields_text = NULL;
    if (row == NULL) {
        PyErr_Clear();
        return NULL;
    }
    json->len = 0;
    int others = 0;
    for (int f = 0; f < nfields; f++) {
        int k = known_index(&keys[f]);
        if (k >= 0) {
            known[k] = vals[f].kind == M_UNICODE ? cached_text(&st->known[k], &vals[f]) : known_text(&vals[f]);
            if (known[k] == NULL)
                goto fallback;
            continue;
        }
        if (sb_put(json, others ? ", " : "{", others ? 2 : 1) || json_str(json, keys[f].s, keys[f].n) ||
            sb_put(json, ": ", 2) || json_val(json, &vals[f]))
            goto fallback;
        others++;
    }
    if (others) {
        if (sb_put(json, "}", 1) || (fields_text = fields_str(st)) == NULL)
            goto fallback;
    }
    PyObject *cols[DECODED];
    cols[0] = PyLong_FromLongLong(ts.i);
    cols[1] = PyLong_FromLongLong(level.i);
    cols[2] = name.kind == M_NONE ? PyUnicode_FromString("root") : cached_text(&st->names, &name);
    cols[3] = message.kind == M_NONE ? PyUnicode_FromString("") : text_of(message.s, message.n);
    for (int k = 0; k < NKNOWN; k++)
        cols[4 + k] = known[k] ? known[k] : Py_NewRef(Py_None);
    cols[9] = PyLong_FromLongLong(pid.i);
    cols[10] = thread.kind == M_NONE ? Py_NewRef(Py_None) : cached_text(&st->threads, &thread);
    cols[11] = exc.kind == M_NONE ? Py_NewRef(Py_None) : text_of(exc.s, exc.n);
    cols[12] = fields_text ? fields_text : Py_NewRef(Py_None);
    int ok = 1;
    for (int c = 0; c < DECODED; c++) {
        if (cols[c] == NULL)
            ok = 0;
        PyTuple_SET_ITEM(row, c, cols[c]); /* a NULL slot is fine for Py_DECREF below */
    }
    if (ok)
        return row;
    PyErr_Clear();
    Py_DECREF(row);
    return NULL;
fallback:
    PyErr_Clear();
    for (int k = 0; k < NKNOWN; k++)
        Py_XDECREF(known[k]);
    Py_XDECREF(fields_text);
    Py_DECREF(row);
    return NULL;
}

/* A value the garbage collector never needs to walk a row for. */
static inline int is_atomic(PyObject *v) {
    return v == Py_None || PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v);
}

/* labels.get(row[9], unknown), borrowed; NULL with an error set. */
static PyObject *label_of(PyObject *row, PyObject *labels, PyObject *unknown, const char *name) {
    PyObject *pid = PyTuple_Check(row) && PyTuple_GET_SIZE(row) > 9 ? PyTuple_GET_ITEM(row, 9) : NULL;
    if (pid == NULL) {
        PyErr_Format(PyExc_ValueError, "%s: a row without a pid column", name);
        return NULL;
    }
    PyObject *label = PyDict_GetItemWithError(labels, pid);
    if (label == NULL) {
        if (PyErr_Occurred())
            return NULL;
        label = unknown;
    }
    if (!PyTuple_Check(label)) {
        PyErr_Format(PyExc_TypeError, "%s: a label must be a tuple", name);
        return NULL;
    }
    return label;
}

/* row + labels.get(row[9], unknown): the row with its process's service and
 * host appended (a new reference; NULL with an error set).  A row of only
 * str, int, float and None is untracked by the garbage collector, which then
 * never walks a batch's rows (it would at each collection the batch's
 * allocations set off). */
static PyObject *labelled(PyObject *row, PyObject *labels, PyObject *unknown) {
    PyObject *label = label_of(row, labels, unknown, "label_rows");
    if (label == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(row), m = PyTuple_GET_SIZE(label);
    PyObject *out = PyTuple_New(n + m);
    if (out == NULL)
        return NULL;
    int atomic = 1;
    for (Py_ssize_t i = 0; i < n + m; i++) {
        PyObject *v = i < n ? PyTuple_GET_ITEM(row, i) : PyTuple_GET_ITEM(label, i - n);
        atomic &= is_atomic(v);
        PyTuple_SET_ITEM(out, i, Py_NewRef(v));
    }
    if (atomic)
        PyObject_GC_UnTrack(out);
    return out;
}

/* label_rows(rows, labels, unknown) -> [row + labels.get(row[9], unknown) for row in rows]:
 * _resource.Resources.label's last step. */
static PyObject *py_label_rows(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows, *labels, *unknown;
    if (!PyArg_ParseTuple(args, "O!O!O!:label_rows", &PyList_Type, &rows, &PyDict_Type, &labels, &PyTuple_Type,
                          &unknown))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = labelled(PyList_GET_ITEM(rows, i), labels, unknown);
        if (row == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, row);
    }
    return out;
}

/* rollup_groups(rows, minute_ns) -> {(minute, level, logger): count}, where
 * minute is ts // minute_ns (rounded down) of rows of _schema.COLUMNS, as
 * _rollup.advance_batch counts them; None when a row's ts is not an int of
 * 64 bits, its level not an int or its logger not a str (Python decides
 * then).  A batch comes in runs of one key: a dict lookup per run, not per row. */
static PyObject *py_rollup_groups(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows;
    long long width;
    if (!PyArg_ParseTuple(args, "O!L:rollup_groups", &PyList_Type, &rows, &width))
        return NULL;
    if (width <= 0) {
        PyErr_SetString(PyExc_ValueError, "rollup_groups: minute_ns must be positive");
        return NULL;
    }
    PyObject *groups = PyDict_New();
    if (groups == NULL)
        return NULL;
    long long minute = 0, run = 0;
    PyObject *level = NULL, *logger = NULL; /* the run's, borrowed from its first row */
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i <= n; i++) {
        long long m = 0;
        PyObject *lv = NULL, *lg = NULL;
        if (i < n) {
            PyObject *row = PyList_GET_ITEM(rows, i);
            if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 3)
                goto irregular;
            PyObject *ts = PyTuple_GET_ITEM(row, 0);
            lv = PyTuple_GET_ITEM(row, 1), lg = PyTuple_GET_ITEM(row, 2);
            if (!PyLong_CheckExact(ts) || !PyLong_CheckExact(lv) || !PyUnicode_CheckExact(lg))
                goto irregular;
            int overflow;
            long long t = PyLong_AsLongLongAndOverflow(ts, &overflow);
            if (overflow || (t == -1 && PyErr_Occurred()))
                goto irregular;
            m = t / width - (t % width < 0);
            if (run > 0 && m == minute) {
                int same_level = lv == level ? 1 : PyObject_RichCompareBool(lv, level, Py_EQ);
                int same_logger = lg == logger ? 1 : PyObject_RichCompareBool(lg, logger, Py_EQ);
                if (same_level < 0 || same_logger < 0)
                    goto error;
                if (same_level && same_logger) {
                    run++;
                    continue;
                }
            }
        }
        if (run > 0) { /* the run ends: add it to its key's count */
            PyObject *key = Py_BuildValue("(LOO)", minute, level, logger);
            if (key == NULL)
                goto error;
            PyObject *had = PyDict_GetItemWithError(groups, key); /* borrowed */
            long long before = had != NULL ? PyLong_AsLongLong(had) : 0; /* a count of ours */
            PyObject *total = PyErr_Occurred() ? NULL : PyLong_FromLongLong(before + run);
            int rc = total == NULL ? -1 : PyDict_SetItem(groups, key, total);
            Py_XDECREF(total);
            Py_DECREF(key);
            if (rc < 0)
                goto error;
        }
        minute = m, level = lv, logger = lg, run = 1;
    }
    return groups;
irregular:
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_DECREF(groups);
    Py_RETURN_NONE;
error:
    Py_DECREF(groups);
    return NULL;
}

/* The column indexes a batch helper reads from each row: at most
 * MAX_ROW_COLUMNS, each 0 or more.  Their count, or -1 with an exception set. */
#define MAX_ROW_COLUMNS 16
static Py_ssize_t row_columns(const char *name, PyObject *columns, Py_ssize_t *cols) {
    Py_ssize_t ncols = PyTuple_GET_SIZE(columns);
    if (ncols > MAX_ROW_COLUMNS) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d columns", name, MAX_ROW_COLUMNS);
        return -1;
    }
    for (Py_ssize_t c = 0; c < ncols; c++)
        if ((cols[c] = PyLong_AsSsize_t(PyTuple_GET_ITEM(columns, c))) < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s: a column is an index, 0 or more", name);
            return -1;
        }
    return ncols;
}

/* any_non_ascii(rows, columns) -> whether a row holds a str with a character
 * past ASCII in one of these columns: rows that do not are never indexed
 * by trigrams (_schema.WIDE_INDEX_SQL), so a batch without one skips that
 * statement.  A str knows whether it is ASCII: no character is read. */
static PyObject *py_any_non_ascii(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows, *columns;
    if (!PyArg_ParseTuple(args, "O!O!:any_non_ascii", &PyList_Type, &rows, &PyTuple_Type, &columns))
        return NULL;
    Py_ssize_t cols[MAX_ROW_COLUMNS];
    Py_ssize_t ncols = row_columns("any_non_ascii", columns, cols);
    if (ncols < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row))
            Py_RETURN_TRUE; /* not a row this knows: say yes, the statement decides */
        for (Py_ssize_t c = 0; c < ncols; c++) {
            if (cols[c] >= PyTuple_GET_SIZE(row))
                Py_RETURN_TRUE;
            PyObject *v = PyTuple_GET_ITEM(row, cols[c]);
            if (PyUnicode_Check(v) && !PyUnicode_IS_ASCII(v))
                Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

/* ------------------------------------------------------------------------ */
/* the per-row word signature (janus_utils._words)                          */

/* The bit of one token, from FNV-1a 32 of its bytes lowercased, mixed by a
 * multiplication, top five bits.  janus_utils._words.word_bit is the same
 * function; tests/test_words.py holds the two to each other. */
#define WORD_HASH_START 2166136261u
#define WORD_HASH_STEP(h, c) (((h) ^ (uint32_t)(c)) * 16777619u)
#define TOKEN_BIT(h) ((uint32_t)1 << (((uint32_t)(h) * 2654435761u) >> 27))

/* A byte as unicode61 sees it in ASCII text: a letter or digit, lowercased;
 * 0 for a separator (every other byte, NUL among them). */
static unsigned char word_char[256];

static void init_word_chars(void) {
    for (int c = '0'; c <= '9'; c++)
        word_char[c] = (unsigned char)c;
    for (int c = 'a'; c <= 'z'; c++)
        word_char[c] = (unsigned char)c, word_char[c - 32] = (unsigned char)c;
}

/* Adds the tokens of one column value to *bits; 0 when the value is one the
 * signature cannot describe exactly (see _words): the row then gets -1. */
static int add_words(PyObject *v, uint32_t *bits) {
    if (v == Py_None)
        return 1;
    /* Bytes, numbers, text past ASCII (unicode61 folds some of it to ASCII tokens). */
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v))
        return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    uint32_t h = WORD_HASH_START, acc = 0;
    int in_token = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = word_char[s[i]];
        if (c) {
            h = WORD_HASH_STEP(h, c);
            in_token = 1;
            continue;
        }
        if (s[i] == 0)
            return 0; /* a NUL: what SQLite and FTS5 make of the rest is not ours to guess */
        if (in_token) {
            acc |= TOKEN_BIT(h);
            h = WORD_HASH_START, in_token = 0;
        }
    }
    if (in_token)
        acc |= TOKEN_BIT(h);
    *bits |= acc;
    return 1;
}

/* What one column's value gave the signature of the last row read: a row
 * holding the same object there (decode_rows shares repeated text between
 * rows) gets the same without reading it again.  The memo holds a reference,
 * so the address cannot be another object's. */
typedef struct {
    PyObject *v; /* NULL: nothing yet */
    uint32_t bits;
    int exact;
} words_memo;

/* The word signature of the text of row (a tuple whose first `filled` slots
 * are set) at these columns, as a new int: what sign_rows appends.  NULL with
 * ValueError when a column is past the filled slots.  memo: NULL, or one
 * words_memo per column. */
static PyObject *row_signature(PyObject *row, Py_ssize_t filled, const Py_ssize_t *cols, Py_ssize_t ncols,
                               words_memo *memo, const char *name) {
    uint32_t bits = 0;
    int exact = 1;
    for (Py_ssize_t c = 0; c < ncols && exact; c++) {
        if (cols[c] >= filled) {
            PyErr_Format(PyExc_ValueError, "%s: a row is shorter than a column's index", name);
            return NULL;
        }
        PyObject *v = PyTuple_GET_ITEM(row, cols[c]);
        if (memo != NULL && memo[c].v == v) {
            bits |= memo[c].bits;
            exact = memo[c].exact;
            continue;
        }
        uint32_t own = 0;
        exact = add_words(v, &own);
        bits |= own;
        if (memo != NULL) {
            Py_XSETREF(memo[c].v, Py_NewRef(v));
            memo[c].bits = own, memo[c].exact = exact;
        }
    }
    return PyLong_FromLong(exact ? (long)(int32_t)bits : -1L);
}

/* sign_rows(rows, columns) -> [row + (words,) for row in rows], words the
 * signature of the row's text in these columns (janus_utils._words): one bit
 * per distinct token as FTS5's unicode61 splits and folds ASCII, as a signed
 * 32-bit int; -1 (every bit) when a column holds anything but ASCII text
 * without NUL, or None.  The flusher and archive import store it with each
 * row, so a search rejects most of a user's rows from the user index alone. */
static PyObject *py_sign_rows(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows, *columns;
    if (!PyArg_ParseTuple(args, "O!O!:sign_rows", &PyList_Type, &rows, &PyTuple_Type, &columns))
        return NULL;
    Py_ssize_t cols[MAX_ROW_COLUMNS];
    Py_ssize_t ncols = row_columns("sign_rows", columns, cols);
    if (ncols < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "sign_rows: a row must be a tuple");
            goto error;
        }
        Py_ssize_t width = PyTuple_GET_SIZE(row);
        PyObject *words = row_signature(row, width, cols, ncols, NULL, "sign_rows");
        PyObject *signed_row = words == NULL ? NULL : PyTuple_New(width + 1);
        if (signed_row == NULL) {
            Py_XDECREF(words);
            goto error;
        }
        int atomic = 1;
        for (Py_ssize_t k = 0; k < width; k++) {
            PyObject *v = PyTuple_GET_ITEM(row, k);
            atomic &= is_atomic(v);
            PyTuple_SET_ITEM(signed_row, k, Py_NewRef(v));
        }
        PyTuple_SET_ITEM(signed_row, width, words);
        if (atomic) /* as labelled(): the garbage collector need not walk the batch */
            PyObject_GC_UnTrack(signed_row);
        PyList_SET_ITEM(out, i, signed_row);
    }
    return out;
error:
    Py_DECREF(out); /* the slots not yet set are NULL, which list dealloc skips */
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* the flusher's rows, each built once                                       */

static int all_atomic(PyObject *t) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
        if (!is_atomic(PyTuple_GET_ITEM(t, i)))
            return 0;
    return 1;
}

/* Fills the slots after the DECODED ones of a fresh row: its label (as long
 * as unknown), then its word signature when ncols >= 0.  -1 with an error. */
static int fill_tail(PyObject *row, PyObject *labels, PyObject *unknown, const Py_ssize_t *cols,
                     Py_ssize_t ncols, words_memo *memo) {
    /* None in the empty slots first: the label lookup may run Python code (a
     * key's __eq__), which could reach this tracked tuple through the GC. */
    for (Py_ssize_t i = DECODED; i < PyTuple_GET_SIZE(row); i++)
        PyTuple_SET_ITEM(row, i, Py_NewRef(Py_None)); /* a fresh row's: empty until here */
    PyObject *label = label_of(row, labels, unknown, "decode_rows");
    if (label == NULL)
        return -1;
    Py_ssize_t m = PyTuple_GET_SIZE(unknown);
    if (PyTuple_GET_SIZE(label) != m) {
        PyErr_SetString(PyExc_ValueError, "decode_rows: every label must be as long as unknown");
        return -1;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *was = PyTuple_GET_ITEM(row, DECODED + i);
        PyTuple_SET_ITEM(row, DECODED + i, Py_NewRef(PyTuple_GET_ITEM(label, i)));
        Py_DECREF(was);
    }
    if (ncols >= 0) {
        PyObject *words = row_signature(row, DECODED, cols, ncols, memo, "decode_rows");
        if (words == NULL)
            return -1;
        PyObject *was = PyTuple_GET_ITEM(row, DECODED + m);
        PyTuple_SET_ITEM(row, DECODED + m, words);
        Py_DECREF(was);
    }
    return 0;
}

/* decode_rows(raw, count, fallback[, labels, unknown[, columns]]) -> list of
 * rows, as _record.decode_row makes them (_schema.DECODED_COLUMNS).  raw is
 * what jr_read wrote: count records, each a 16-byte head (seq u64, length
 * u32, 4 spare bytes) and its payload.  A payload this parser does not take
 * whole (another format, nested or foreign values, text that needs cleaning,
 * a repeated key) is handed to fallback(payload_bytes), the Python
 * decode_row, so the rows are the same either way; tests/test_speedups.py
 * checks that.
 *
 * With labels, each row ends with labels.get(row[9], unknown), as label_rows
 * appends it; with columns too, then with its word signature of the text at
 * these columns (decoded ones), as sign_rows appends it.  The flusher's rows
 * are so built once, not once per step: a third of the tuples and passes. */
static PyObject *py_decode_rows(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer raw;
    Py_ssize_t count;
    PyObject *fallback, *labels = Py_None, *unknown = Py_None, *columns = Py_None;
    if (!PyArg_ParseTuple(args, "y*nO|OOO:decode_rows", &raw, &count, &fallback, &labels, &unknown, &columns))
        return NULL;
    Py_ssize_t cols[MAX_ROW_COLUMNS], ncols = -1, width = DECODED;
    if (labels != Py_None) {
        if (!PyDict_Check(labels) || !PyTuple_Check(unknown)) {
            PyErr_SetString(PyExc_TypeError, "decode_rows: labels must be a dict and unknown a tuple");
            PyBuffer_Release(&raw);
            return NULL;
        }
        width += PyTuple_GET_SIZE(unknown);
        if (columns != Py_None) {
            if (!PyTuple_Check(columns)) {
                PyErr_SetString(PyExc_TypeError, "decode_rows: columns must be a tuple of indexes");
                PyBuffer_Release(&raw);
                return NULL;
            }
            if ((ncols = row_columns("decode_rows", columns, cols)) < 0) {
                PyBuffer_Release(&raw);
                return NULL;
            }
            width += 1;
        }
    } else if (columns != Py_None) {
        PyErr_SetString(PyExc_TypeError, "decode_rows: columns are given with labels");
        PyBuffer_Release(&raw);
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    decode_state st;
    memset(&st, 0, sizeof st);
    words_memo memo[MAX_ROW_COLUMNS];
    memset(memo, 0, sizeof memo);
    const uint8_t *p = raw.buf, *end = p + raw.len;
    for (Py_ssize_t k = 0; rows != NULL && k < count; k++) {
        if (end - p < 16) {
            PyErr_SetString(PyExc_ValueError, "decode_rows: the buffer holds fewer records than count");
            Py_CLEAR(rows);
            break;
        }
        Py_ssize_t len = (Py_ssize_t)((uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 |
                                      (uint32_t)p[11] << 24);
        p += 16;
        if (end - p < len) {
            PyErr_SetString(PyExc_ValueError, "decode_rows: a record runs past the buffer");
            Py_CLEAR(rows);
            break;
        }
        PyObject *row = decode_one(p, len, &st, width);
        int untrack = 1; /* the rows this builds, of str, int and None only: see labelled() */
        if (row == NULL) {
            PyObject *payload = PyBytes_FromStringAndSize((const char *)p, len);
            PyObject *plain = payload ? PyObject_CallOneArg(fallback, payload) : NULL;
            Py_XDECREF(payload);
            if (plain == NULL || width == DECODED) {
                row = plain, untrack = 0; /* as fallback made it */
            } else if (!PyTuple_Check(plain) || PyTuple_GET_SIZE(plain) != DECODED) {
                PyErr_SetString(PyExc_TypeError, "decode_rows: fallback must return a tuple of the decoded columns");
                Py_DECREF(plain);
            } else if ((row = PyTuple_New(width)) != NULL) {
                for (Py_ssize_t i = 0; i < DECODED; i++)
                    PyTuple_SET_ITEM(row, i, Py_NewRef(PyTuple_GET_ITEM(plain, i)));
                Py_DECREF(plain);
                if (fill_tail(row, labels, unknown, cols, ncols, memo) < 0)
                    Py_CLEAR(row);
            } else {
                Py_DECREF(plain);
            }
        } else if (width > DECODED && fill_tail(row, labels, unknown, cols, ncols, memo) < 0) {
            Py_CLEAR(row);
        }
        if (row != NULL && untrack && all_atomic(row))
            PyObject_GC_UnTrack(row);
        if (row == NULL || PyList_Append(rows, row) < 0)
            Py_CLEAR(rows);
        Py_XDECREF(row);
        p += len;
    }
    decode_state_clear(&st);
    for (Py_ssize_t c = 0; c < MAX_ROW_COLUMNS; c++)
        Py_XDECREF(memo[c].v);
    PyBuffer_Release(&raw);
    return rows;
}

/* flat_rows(rows, per, width) -> [tuple of the items of rows[i:i + per]] for
 * each whole run of per rows (the rest left out), or None when a row is not
 * a tuple of width items: the values of one INSERT of per rows, as
 * tuple(itertools.chain(rows[i:i + per])) makes them, without the Python
 * iteration per value. */
static PyObject *py_flat_rows(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows;
    Py_ssize_t per, width;
    if (!PyArg_ParseTuple(args, "O!nn:flat_rows", &PyList_Type, &rows, &per, &width))
        return NULL;
    if (per < 1 || width < 0 || width > PY_SSIZE_T_MAX / per) {
        PyErr_SetString(PyExc_ValueError, "flat_rows: per must be 1 or more and width 0 or more");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != width)
            Py_RETURN_NONE;
    }
    Py_ssize_t groups = n / per;
    PyObject *out = PyList_New(groups);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t g = 0; g < groups; g++) {
        PyObject *flat = PyTuple_New(per * width);
        if (flat == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t r = g * per; r < (g + 1) * per; r++) {
            PyObject *row = PyList_GET_ITEM(rows, r);
            for (Py_ssize_t c = 0; c < width; c++)
                PyTuple_SET_ITEM(flat, at++, Py_NewRef(PyTuple_GET_ITEM(row, c)));
        }
        if (all_atomic(flat)) /* the garbage collector need not walk a batch's values */
            PyObject_GC_UnTrack(flat);
        PyList_SET_ITEM(out, g, flat);
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* the guard against a second SQLite library in the process                  */

/* Python's sqlite3 links another SQLite library than apsw's: in one process
 * the two do not see each other's POSIX locks, and a sqlite3 connection to a
 * database janus_utils writes corrupts it.  An audit hook sees every
 * sqlite3.connect before the file is opened; janus_utils._sqlite_guard
 * decides.  The hook is in C because it runs for every audit event of the
 * process (builtins.id, marshal.dumps, ...): for those it costs one strcmp,
 * where a Python hook costs a call. */

static PyObject *sqlite_guard; /* called with the sqlite3.connect event's arguments */
static int sqlite_guard_installed;

static int audit_hook(const char *event, PyObject *args, void *data) {
    (void)data;
    if (event[0] != 's' || strcmp(event, "sqlite3.connect") != 0 || sqlite_guard == NULL)
        return 0;
    PyObject *result = PyObject_Call(sqlite_guard, args, NULL);
    if (result == NULL)
        return -1; /* the exception stops the connection before anything is opened */
    Py_DECREF(result);
    return 0;
}

static PyObject *py_guard_sqlite_connect(PyObject *self, PyObject *callback) {
    (void)self;
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "guard_sqlite_connect: the guard must be callable");
        return NULL;
    }
    Py_INCREF(callback);
    Py_XSETREF(sqlite_guard, callback);
    if (!sqlite_guard_installed) {
        /* Audit hooks cannot be removed: installed once, for good. */
        if (PySys_AddAuditHook(audit_hook, NULL) < 0)
            return NULL;
        sqlite_guard_installed = 1;
    }
    Py_RETURN_NONE;
}

/* ---- term bitmaps (janus_utils._termbits) ----
 * A bitmap is bytes, bit i of the block at byte i >> 3, bit i & 7
 * (little-endian), trailing zero bytes left off.  Called by one thread at a
 * time per object, under the GIL. */

/* id_bitmap(rows, base, nbits) -> (bitmap, count): rows yields (id,) with
 * base <= id < base + nbits, as SELECT "rowid" ... BETWEEN gives them. */
static PyObject *py_id_bitmap(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows;
    long long base;
    Py_ssize_t nbits;
    if (!PyArg_ParseTuple(args, "OLn:id_bitmap", &rows, &base, &nbits))
        return NULL;
    if (nbits <= 0 || nbits % 8 || nbits > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "id_bitmap: nbits must be a positive multiple of 8, at most 2**24");
        return NULL;
    }
    unsigned char *bits = PyMem_Calloc((size_t)nbits / 8, 1);
    if (bits == NULL)
        return PyErr_NoMemory();
    PyObject *it = PyObject_GetIter(rows);
    if (it == NULL)
        goto fail;
    long long n = 0;
    Py_ssize_t used = 0; /* bytes up to the highest bit set */
    PyObject *row;
    while ((row = PyIter_Next(it)) != NULL) {
        PyObject *value = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 1 ? PyTuple_GET_ITEM(row, 0) : NULL;
        long long id = value != NULL && PyLong_Check(value) ? PyLong_AsLongLong(value) : -1;
        int bad = value == NULL || !PyLong_Check(value) || (id == -1 && PyErr_Occurred());
        Py_DECREF(row);
        if (bad || id < base || id - base >= nbits) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "id_bitmap: a row is not (id,) with an id in the block");
            Py_DECREF(it);
            goto fail;
        }
        long long offset = id - base;
        bits[offset >> 3] |= (unsigned char)(1u << (offset & 7));
        if ((offset >> 3) + 1 > used)
            used = (Py_ssize_t)(offset >> 3) + 1;
        n++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        goto fail;
    PyObject *result = Py_BuildValue("(y#L)", (const char *)bits, used, n);
    PyMem_Free(bits);
    return result;
fail:
    PyMem_Free(bits);
    return NULL;
}

/* term_bitmaps(rows, base, nbits, terms[, columns, first_id]) -> [(bitmap,
 * count) per term], or None: rows are (id, text, ...) with base <= id <
 * base + nbits; or, given columns (a tuple of indexes) and first_id, rows
 * whose text is at those indexes, row i having id first_id + i.  Terms are
 * lowercase ASCII letters and digits (at most TERM_MAX bytes, at most
 * TERM_SLOTS / 4 of them).  A term's bit is set for each row holding it as a
 * token, as unicode61 splits and folds ASCII text (word_char, as the word
 * signature reads it).  None when a text column holds what that reading
 * cannot describe exactly (see add_words): the caller asks the index. */
#define TERM_MAX 64
#define TERM_SLOTS 256

static PyObject *py_term_bitmaps(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *rows, *terms, *columns = NULL;
    long long base, first_id = 0;
    Py_ssize_t nbits;
    if (!PyArg_ParseTuple(args, "O!LnO!|O!L:term_bitmaps", &PyList_Type, &rows, &base, &nbits, &PyTuple_Type, &terms,
                          &PyTuple_Type, &columns, &first_id))
        return NULL;
    Py_ssize_t cols[MAX_ROW_COLUMNS];
    Py_ssize_t ncols = columns == NULL ? 0 : row_columns("term_bitmaps", columns, cols);
    if (ncols < 0)
        return NULL;
    Py_ssize_t nterms = PyTuple_GET_SIZE(terms);
    if (nbits <= 0 || nbits % 8 || nbits > (1 << 24) || nterms > TERM_SLOTS / 4) {
        PyErr_SetString(PyExc_ValueError, "term_bitmaps: nbits a positive multiple of 8 up to 2**24, at most 64 terms");
        return NULL;
    }
    /* An open-addressed table of the terms by their hash: slot -> term index + 1. */
    int slot_of[TERM_SLOTS] = {0};
    uint32_t hash_of[TERM_SLOTS / 4];
    for (Py_ssize_t t = 0; t < nterms; t++) {
        PyObject *term = PyTuple_GET_ITEM(terms, t);
        if (!PyUnicode_CheckExact(term) || !PyUnicode_IS_ASCII(term) || PyUnicode_GET_LENGTH(term) == 0 ||
            PyUnicode_GET_LENGTH(term) > TERM_MAX) {
            PyErr_SetString(PyExc_ValueError, "term_bitmaps: a term must be lowercase ASCII letters and digits");
            return NULL;
        }
        const unsigned char *s = PyUnicode_1BYTE_DATA(term);
        uint32_t h = WORD_HASH_START;
        for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(term); i++) {
            if (word_char[s[i]] != s[i]) {
                PyErr_SetString(PyExc_ValueError, "term_bitmaps: a term must be lowercase ASCII letters and digits");
                return NULL;
            }
            h = WORD_HASH_STEP(h, s[i]);
        }
        hash_of[t] = h;
        uint32_t slot = h % TERM_SLOTS;
        while (slot_of[slot])
            slot = (slot + 1) % TERM_SLOTS;
        slot_of[slot] = (int)t + 1;
    }
    size_t bytes = (size_t)nbits / 8;
    unsigned char *bits = PyMem_Calloc(nterms ? (size_t)nterms * bytes : 1, 1);
    if (bits == NULL)
        return PyErr_NoMemory();
    unsigned char token[TERM_MAX];
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        long long id = first_id + r;
        if (columns == NULL) {
            if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 1 || !PyLong_Check(PyTuple_GET_ITEM(row, 0))) {
                PyErr_SetString(PyExc_ValueError, "term_bitmaps: a row must be a tuple (id, text, ...)");
                goto fail;
            }
            id = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 0));
            if (id == -1 && PyErr_Occurred())
                goto fail;
        } else if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_ValueError, "term_bitmaps: a row must be a tuple");
            goto fail;
        }
        if (id < base || id - base >= nbits) {
            PyErr_SetString(PyExc_ValueError, "term_bitmaps: a row's id is outside the block");
            goto fail;
        }
        long long offset = id - base;
        Py_ssize_t width = columns == NULL ? PyTuple_GET_SIZE(row) - 1 : ncols;
        for (Py_ssize_t c = 0; c < width; c++) {
            Py_ssize_t at = columns == NULL ? c + 1 : cols[c];
            if (at >= PyTuple_GET_SIZE(row)) {
                PyErr_SetString(PyExc_ValueError, "term_bitmaps: a row is shorter than a column's index");
                goto fail;
            }
            PyObject *v = PyTuple_GET_ITEM(row, at);
            if (v == Py_None)
                continue;
            if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v)) {
                PyMem_Free(bits);
                Py_RETURN_NONE;
            }
            const unsigned char *s = PyUnicode_1BYTE_DATA(v);
            Py_ssize_t len = PyUnicode_GET_LENGTH(v);
            uint32_t h = WORD_HASH_START;
            Py_ssize_t k = 0; /* the token's length so far */
            for (Py_ssize_t i = 0; i <= len; i++) {
                unsigned char ch = i < len ? word_char[s[i]] : 0;
                if (ch) {
                    if (k < TERM_MAX)
                        token[k] = ch;
                    k++;
                    h = WORD_HASH_STEP(h, ch);
                    continue;
                }
                if (i < len && s[i] == 0) {
                    PyMem_Free(bits); /* a NUL: what FTS5 makes of the rest is not ours to guess */
                    Py_RETURN_NONE;
                }
                if (k && k <= TERM_MAX) {
                    for (uint32_t slot = h % TERM_SLOTS; slot_of[slot]; slot = (slot + 1) % TERM_SLOTS) {
                        Py_ssize_t t = slot_of[slot] - 1;
                        PyObject *term = PyTuple_GET_ITEM(terms, t);
                        if (hash_of[t] == h && PyUnicode_GET_LENGTH(term) == k &&
                            memcmp(PyUnicode_1BYTE_DATA(term), token, (size_t)k) == 0) {
                            bits[(size_t)t * bytes + (size_t)(offset >> 3)] |= (unsigned char)(1u << (offset & 7));
                            break;
                        }
                    }
                }
                h = WORD_HASH_START, k = 0;
            }
        }
    }
    PyObject *out = PyList_New(nterms);
    if (out == NULL)
        goto fail;
    for (Py_ssize_t t = 0; t < nterms; t++) {
        const unsigned char *b = bits + (size_t)t * bytes;
        size_t used = bytes;
        while (used && b[used - 1] == 0)
            used--;
        long long count = 0;
        for (size_t i = 0; i < used; i++)
            count += __builtin_popcount(b[i]);
        PyObject *item = Py_BuildValue("(y#L)", (const char *)b, (Py_ssize_t)used, count);
        if (item == NULL) {
            Py_DECREF(out);
            goto fail;
        }
        PyList_SET_ITEM(out, t, item);
    }
    PyMem_Free(bits);
    return out;
fail:
    PyMem_Free(bits);
    return NULL;
}

/* and_count(bitmaps) -> how many bits are set in every one of them (a list or
 * tuple of bytes, at least one); past the end of the shortest, none. */
static PyObject *py_and_count(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyList_Check(arg) && !PyTuple_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "and_count: a list or tuple of bytes");
        return NULL;
    }
    Py_ssize_t k = PySequence_Fast_GET_SIZE(arg);
    PyObject **items = PySequence_Fast_ITEMS(arg);
    if (k == 0) {
        PyErr_SetString(PyExc_ValueError, "and_count: no bitmap");
        return NULL;
    }
    Py_ssize_t len = PY_SSIZE_T_MAX;
    for (Py_ssize_t j = 0; j < k; j++) {
        if (!PyBytes_Check(items[j])) {
            PyErr_SetString(PyExc_TypeError, "and_count: a list or tuple of bytes");
            return NULL;
        }
        if (PyBytes_GET_SIZE(items[j]) < len)
            len = PyBytes_GET_SIZE(items[j]);
    }
    unsigned long long total = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word, x;
        memcpy(&word, PyBytes_AS_STRING(items[0]) + i, 8);
        for (Py_ssize_t j = 1; j < k; j++) {
            memcpy(&x, PyBytes_AS_STRING(items[j]) + i, 8);
            word &= x;
        }
        total += (unsigned long long)__builtin_popcountll(word);
    }
    for (; i < len; i++) {
        unsigned char byte = (unsigned char)PyBytes_AS_STRING(items[0])[i];
        for (Py_ssize_t j = 1; j < k; j++)
            byte &= (unsigned char)PyBytes_AS_STRING(items[j])[i];
        total += (unsigned long long)__builtin_popcount(byte);
    }
    return PyLong_FromUnsignedLongLong(total);
}

static PyMethodDef module_methods[] = {
    {"encode", py_encode, METH_O,
     "encode(obj) -> bytes: marshal.dumps(obj, 2), for the plain records this module writes."},
    {"label_rows", py_label_rows, METH_VARARGS,
     "label_rows(rows, labels, unknown) -> [row + labels.get(row[9], unknown) for row in rows]."},
    {"rollup_groups", py_rollup_groups, METH_VARARGS,
     "rollup_groups(rows, minute_ns) -> {(minute, level, logger): count}, or None for a row Python must count."},
    {"any_non_ascii", py_any_non_ascii, METH_VARARGS,
     "any_non_ascii(rows, columns) -> whether a row holds a str past ASCII in one of these columns."},
    {"sign_rows", py_sign_rows, METH_VARARGS,
     "sign_rows(rows, columns) -> [row + (words,)]: each row with its word signature (janus_utils._words)."},
    {"decode_rows", py_decode_rows, METH_VARARGS,
     "decode_rows(raw, count, fallback[, labels, unknown[, columns]]) -> rows: jr_read's output as "
     "_record.decode_row makes rows; with labels, each row + labels.get(row[9], unknown); with columns, "
     "then + (words,) as sign_rows appends it."},
    {"flat_rows", py_flat_rows, METH_VARARGS,
     "flat_rows(rows, per, width) -> [the items of rows[i:i + per] as one tuple] per whole run, or None."},
    {"set_python_path", py_set_python_path, METH_VARARGS,
     "set_python_path(level_call, exception_call, log_call, finish, report): logger.py's side of Logger."},
    {"set_emitter", py_set_emitter, METH_VARARGS,
     "set_emitter(emitter, trace_current, trace_ids): the setup Logger's level methods log into (None: none)."},
    {"set_python_from", py_set_python_from, METH_O,
     "set_python_from(level) -> previous: calls at this level and above take the Python path."},
    {"guard_sqlite_connect", py_guard_sqlite_connect, METH_O,
     "guard_sqlite_connect(guard): call guard(database) before every sqlite3.connect (an audit hook)."},
    {"id_bitmap", py_id_bitmap, METH_VARARGS,
     "id_bitmap(rows, base, nbits) -> (bitmap, count): the (id,) rows as bits id - base (janus_utils._termbits)."},
    {"term_bitmaps", py_term_bitmaps, METH_VARARGS,
     "term_bitmaps(rows, base, nbits, terms[, columns, first_id]) -> [(bitmap, count)] per term, or None."},
    {"and_count", py_and_count, METH_O,
     "and_count(bitmaps) -> how many bits are set in every one of these bitmaps (janus_utils._termbits)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "janus_utils._speedups",
    "The log call's encoder in C; see _native/speedups.c.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&EmitterType) < 0 || PyType_Ready(&LoggerType) < 0)
        return NULL;
    init_word_chars();
    name_attr = PyUnicode_InternFromString("name");
    trace_id_str = PyUnicode_InternFromString("trace_id");
    if (name_attr == NULL || trace_id_str == NULL)
        return NULL;
    PyObject *thread_mod = PyImport_ImportModule("_thread");
    if (thread_mod == NULL)
        return NULL;
    PyObject *local = PyObject_GetAttrString(thread_mod, "_local");
    Py_DECREF(thread_mod);
    if (local == NULL)
        return NULL;
    if (!PyType_Check(local)) {
        Py_DECREF(local);
        PyErr_SetString(PyExc_ImportError, "_thread._local is not a type");
        return NULL;
    }
    thread_local_type = (PyTypeObject *)local; /* kept for the module's life */
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Emitter", (PyObject *)&EmitterType) < 0 ||
        PyModule_AddObjectRef(m, "Logger", (PyObject *)&LoggerType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORD", STACK_BUF) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT", RECORD_FORMAT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
