/* janus_seal_rows(): the canonical bytes of a batch of log rows, for sealing.
 *
 * A SQLite loadable extension (loaded into the flusher's and the verifier's
 * apsw connection with load_extension; it uses only the API routines that
 * SQLite hands it, so it works with the SQLite that apsw embeds).  It does no
 * cryptography: it writes each row's values in an unambiguous encoding, and
 * janus_utils.seal hashes the result with hashlib.  Reading the values here,
 * inside SQLite, is what makes verify fast: fetching every column of every row
 * into Python objects costs several times more than hashing them.
 *
 *   SELECT janus_seal_rows(id, ts, ..., host) FROM logs WHERE id BETWEEN ? AND ?
 *
 * The rows must come in ascending id order, as a rowid range scan gives them
 * (an ORDER BY inside the aggregate would make SQLite sort copies of every
 * row: half the speed).  An id not above the one before makes the result an
 * error, "janus_seal_rows: rows not in id order", never wrong bytes.
 *
 * returns one BLOB (the rows first, so that it is handed to SQLite uncopied):
 *   the rows, each value as
 *             0x00                         NULL
 *             0x01 + 8 bytes big-endian    INTEGER (two's complement)
 *             0x02 + 8 bytes big-endian    REAL (IEEE 754 bits)
 *             0x03 + 4-byte length + bytes TEXT (the stored bytes, NULs included)
 *             0x04 + 4-byte length + bytes BLOB
 *   4*n bytes per row, CRC-32 (zlib) of the row's encoding without its first
 *             value (the id): lets verify say which row changed or moved;
 *             not a security measure, the SHA-256 of the rows is
 *   4 bytes   the row count n (big-endian)
 * janus_utils.seal.encode_rows writes the same bytes from Python values.
 *
 * Thread safety: an aggregate context belongs to one statement on one
 * connection; SQLite serialises calls on it.
 *
 * The same file is also a Python module, janus_utils._sealrows, with one
 * function, encode_rows(): the same bytes from the row tuples the flusher
 * has just inserted, so sealing need not read them back (see seal.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct {
    unsigned char *rows; /* the encoded rows */
    size_t rows_len, rows_cap;
    unsigned char *crcs; /* 4 bytes per row */
    size_t crcs_len, crcs_cap;
    uint32_t n;
    int oom;
    int unordered;
    sqlite3_int64 last_id;
} Acc;

static int grow(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 1;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    unsigned char *p = sqlite3_realloc64(*buf, cap2);
    if (!p) return 0;
    *buf = p;
    *cap = cap2;
    return 1;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}

/* -- the rows' CRC-32 ---------------------------------------------------
 *
 * zlib's CRC-32 (reflected polynomial 0xEDB88320), the same value as
 * crc32() and Python's zlib.crc32.  zlib computes it a byte or a word at a
 * time; a batch's CRCs were half of encode_rows' time.  Where the CPU has
 * carry-less multiplication, the 16-byte blocks of a row of 64 bytes or more
 * are folded with it instead: Gopal et al., "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ Instruction" (Intel, 2009), with the
 * bit-reflected constants of its appendix for this polynomial (as zlib's
 * and Linux's folding CRCs use them); zlib does the remaining tail.  The
 * tests compare both with zlib.crc32 over every length up to a few hundred
 * bytes. */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_CRC_FOLD 1

#define FOLD_TARGET __attribute__((target("pclmul,sse4.1")))

/* x * x^(distance) folded onto `next`: the lane's two 64-bit halves times k. */
#define FOLD(x, k, next)                                                                    \
    _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128((x), (k), 0x00),                       \
                                _mm_clmulepi64_si128((x), (k), 0x11)), (next))

/* The raw CRC register (zlib's value with its final inversion undone) after
 * p[0..len); len >= 64 and a multiple of 16. */
FOLD_TARGET static uint32_t crc_fold(uint32_t crc, const unsigned char *p, size_t len) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4); /* fold by 512 bits */
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0); /* fold by 128 bits */
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124);               /* 96 to 64 bits */
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);  /* Barrett: P(x)' and mu' */
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)p);
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    p += 64;
    len -= 64;
    while (len >= 64) { /* four lanes, 64 bytes a round */
        x1 = FOLD(x1, k1k2, _mm_loadu_si128((const __m128i *)p));
        x2 = FOLD(x2, k1k2, _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = FOLD(x3, k1k2, _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = FOLD(x4, k1k2, _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        len -= 64;
    }
    x1 = FOLD(x1, k3k4, x2); /* the four lanes into one */
    x1 = FOLD(x1, k3k4, x3);
    x1 = FOLD(x1, k3k4, x4);
    while (len >= 16) {
        x1 = FOLD(x1, k3k4, _mm_loadu_si128((const __m128i *)p));
        p += 16;
        len -= 16;
    }
    /* 128 bits to 64, to 32, then the Barrett reduction modulo P(x). */
    x2 = _mm_clmulepi64_si128(x1, k3k4, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5, 0x00), x2);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, low32), poly, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

static int crc_fold_ok = -1; /* the CPU has PCLMULQDQ and SSE4.1; -1: not asked yet */

static int have_crc_fold(void) {
    if (crc_fold_ok < 0) { /* a benign race: every thread writes the same answer */
        __builtin_cpu_init();
        crc_fold_ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1") &&
                      !getenv("JANUS_SEAL_NO_CRC_FOLD");
    }
    return crc_fold_ok;
}
#endif

/* zlib's crc32() of p[0..len), from its initial value. */
static uint32_t row_crc(const unsigned char *p, size_t len) {
    uLong crc = crc32(0L, Z_NULL, 0);
#ifdef HAVE_CRC_FOLD
    if (len >= 64 && have_crc_fold()) {
        size_t blocks = len & ~(size_t)15;
        crc = ~crc_fold(~(uint32_t)crc, p, blocks) & 0xffffffffUL;
        p += blocks;
        len -= blocks;
    }
#endif
    return (uint32_t)crc32(crc, p, (uInt)len);
}

static void step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    Acc *acc = sqlite3_aggregate_context(ctx, sizeof(Acc));
    if (!acc || acc->oom || acc->unordered) return;
    if (argc > 0) {
        sqlite3_int64 id = sqlite3_value_int64(argv[0]);
        if (acc->n > 0 && id <= acc->last_id) {
            acc->unordered = 1;
            return;
        }
        acc->last_id = id;
    }
    size_t content_start = 0;
    for (int i = 0; i < argc; i++) {
        sqlite3_value *v = argv[i];
        int type = sqlite3_value_type(v);
        size_t at = acc->rows_len;
        if (i == 1) content_start = at;
        if (type == SQLITE_INTEGER || type == SQLITE_FLOAT) {
            if (!grow(&acc->rows, &acc->rows_cap, at + 9)) goto oom;
            uint64_t bits;
            if (type == SQLITE_INTEGER) {
                bits = (uint64_t)sqlite3_value_int64(v);
                acc->rows[at] = 0x01;
            } else {
                double d = sqlite3_value_double(v);
                memcpy(&bits, &d, 8);
                acc->rows[at] = 0x02;
            }
            put64(acc->rows + at + 1, bits);
            acc->rows_len = at + 9;
        } else if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
            /* text before bytes: the byte count of the text as stored */
            const void *data = type == SQLITE_TEXT ? (const void *)sqlite3_value_text(v) : sqlite3_value_blob(v);
            int len = sqlite3_value_bytes(v);
            if (!grow(&acc->rows, &acc->rows_cap, at + 5 + (size_t)len)) goto oom;
            acc->rows[at] = type == SQLITE_TEXT ? 0x03 : 0x04;
            put32(acc->rows + at + 1, (uint32_t)len);
            if (len) memcpy(acc->rows + at + 5, data, (size_t)len);
            acc->rows_len = at + 5 + (size_t)len;
        } else {
            if (!grow(&acc->rows, &acc->rows_cap, at + 1)) goto oom;
            acc->rows[at] = 0x00;
            acc->rows_len = at + 1;
        }
    }
    if (argc < 2) content_start = acc->rows_len;
    if (!grow(&acc->crcs, &acc->crcs_cap, acc->crcs_len + 4)) goto oom;
    put32(acc->crcs + acc->crcs_len, row_crc(acc->rows + content_start, acc->rows_len - content_start));
    acc->crcs_len += 4;
    acc->n++;
    return;
oom:
    acc->oom = 1;
}

static void final(sqlite3_context *ctx) {
    Acc *acc = sqlite3_aggregate_context(ctx, 0);
    if (!acc) { /* no rows */
        static const unsigned char zero[4] = {0, 0, 0, 0};
        sqlite3_result_blob(ctx, zero, 4, SQLITE_TRANSIENT);
        return;
    }
    size_t total = acc->rows_len + acc->crcs_len + 4;
    if (acc->unordered) {
        sqlite3_result_error(ctx, "janus_seal_rows: rows not in id order", -1);
        sqlite3_free(acc->rows);
    } else if (acc->oom || !grow(&acc->rows, &acc->rows_cap, total)) {
        sqlite3_result_error_nomem(ctx);
        sqlite3_free(acc->rows);
    } else {
        if (acc->crcs_len) memcpy(acc->rows + acc->rows_len, acc->crcs, acc->crcs_len);
        put32(acc->rows + acc->rows_len + acc->crcs_len, acc->n);
        sqlite3_result_blob64(ctx, acc->rows, total, sqlite3_free);  /* SQLite frees it */
    }
    sqlite3_free(acc->crcs);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_janussealrows_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    SQLITE_EXTENSION_INIT2(api);
    (void)err;
    return sqlite3_create_function_v2(db, "janus_seal_rows", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, 0, 0,
                                      step, final, 0);
}

/* -- the Python module ------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = PyMem_Realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

/* encode_rows(rows, first_id, kinds) -> (bytes, crcs) or None
 *
 * rows: tuples of the logs columns after id, as bound to the INSERT; the
 * rows get ids first_id, first_id + 1, ...  kinds: one byte per column,
 * 'i' for an INTEGER column, 't' for a TEXT one; a row's values past them
 * (the flusher's word signature, which no seal covers) are left out.  A
 * value SQLite would store as anything but what it is given (a str in an
 * INTEGER column, an int in a TEXT one, a float, bytes, a bool, a str that
 * is not valid UTF-8) makes it return None: the caller reads the stored
 * rows back instead.  crcs: 4 bytes big-endian per row, as janus_seal_rows()
 * writes them.
 */
static PyObject *encode_rows(PyObject *self, PyObject *args) {
    PyObject *rows;
    long long first_id;
    const char *kinds;
    Py_ssize_t nk;
    (void)self;
    if (!PyArg_ParseTuple(args, "OLy#", &rows, &first_id, &kinds, &nk)) return NULL;
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence of tuples");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Buf out = {0}, crcs = {0};
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = items[i];
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < nk) goto unfit;
        if (!buf_grow(&out, 9)) goto nomem;
        out.p[out.len] = 0x01;
        put64(out.p + out.len + 1, (uint64_t)(first_id + i));
        out.len += 9;
        size_t content_start = out.len;
        for (Py_ssize_t j = 0; j < nk; j++) {
            PyObject *v = PyTuple_GET_ITEM(row, j);
            if (v == Py_None) {
                if (!buf_grow(&out, 1)) goto nomem;
                out.p[out.len++] = 0x00;
            } else if (kinds[j] == 'i' && PyLong_CheckExact(v)) {
                int overflow = 0;
                long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred())) {
                    PyErr_Clear();
                    goto unfit;
                }
                if (!buf_grow(&out, 9)) goto nomem;
                out.p[out.len] = 0x01;
                put64(out.p + out.len + 1, (uint64_t)x);
                out.len += 9;
            } else if (kinds[j] == 't' && PyUnicode_CheckExact(v)) {
                Py_ssize_t len;
                const char *text;
                if (PyUnicode_IS_COMPACT_ASCII(v)) { /* most log text: its bytes are the UTF-8 */
                    text = (const char *)PyUnicode_DATA(v);
                    len = PyUnicode_GET_LENGTH(v);
                } else {
                    text = PyUnicode_AsUTF8AndSize(v, &len);
                }
                if (!text) { /* a lone surrogate: SQLite never stores it as given */
                    PyErr_Clear();
                    goto unfit;
                }
                if (!buf_grow(&out, 5 + (size_t)len)) goto nomem;
                out.p[out.len] = 0x03;
                put32(out.p + out.len + 1, (uint32_t)len);
                memcpy(out.p + out.len + 5, text, (size_t)len);
                out.len += 5 + (size_t)len;
            } else {
                goto unfit;
            }
        }
        if (!buf_grow(&crcs, 4)) goto nomem;
        put32(crcs.p + crcs.len, row_crc(out.p + content_start, out.len - content_start));
        crcs.len += 4;
    }
    result = Py_BuildValue("(y#y#)", out.p ? (const char *)out.p : "", (Py_ssize_t)out.len,
                           crcs.p ? (const char *)crcs.p : "", (Py_ssize_t)crcs.len);
    goto done;
unfit:
    result = Py_NewRef(Py_None);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    PyMem_Free(out.p);
    PyMem_Free(crcs.p);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_rows", encode_rows, METH_VARARGS,
     "encode_rows(rows, first_id, kinds) -> (bytes, crcs) or None: janus_seal_rows()'s bytes from row tuples."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sealrows", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sealrows(void) { return PyModule_Create(&module); }
