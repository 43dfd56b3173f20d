/* janus_utils._records: the rows of a search as Records, in C.
 *
 * A search hands back up to thousands of rows, and building a frozen
 * dataclass from each in Python costs more than SQLite's whole work for it:
 * __init__ sets each of the 17 fields through object.__setattr__ (some
 * 3 µs a row).  build() makes the same Records by filling their slots
 * directly, for the rows that hold what the flusher writes (checked here as
 * store._well_typed does); any other row (a damaged one, text read as bytes)
 * goes to the Python function given, so every Record is what store._record
 * would make.
 *
 *   LAYOUT: where the checked columns sit (id, ts, level, pid, fields)
 *   slot_offsets(cls, names) -> tuple of ints
 *       where each named slot of cls lies in its instances (member
 *       descriptors of a class with __slots__, e.g. a dataclass(slots=True)).
 *   build(rows, cls, offsets, parse_fields, fallback, with_snippet) -> list
 *       one instance of cls per row.  A row holds len(offsets) - 1 values
 *       (the Record's fields but the snippet) and, with with_snippet, the
 *       snippet last.  Slot FIELDS_AT gets parse_fields(value); the last slot
 *       the snippet (or None).  A row that fails the checks becomes
 *       fallback(values, snippet).
 *
 * The checks (store._well_typed): ts an int within SQLite's int64, level an
 * int, pid None or an int, every other column but fields a str or None, the
 * snippet a str or None; exact types, as the rows of apsw are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Where the columns sit in a row (store._RECORD_COLUMNS): id, ts, level,
 * logger, message, user_id, agent_id, request_id, trace_id, span_id, pid,
 * thread, exception, fields, service, host. */
#define TS_AT 1
#define LEVEL_AT 2
#define PID_AT 10
#define FIELDS_AT 13
#define ID_AT 0

static PyObject *slot_offsets(PyObject *self, PyObject *args) {
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (descr == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%R is not an object slot of %R", PyTuple_GET_ITEM(names, i), cls);
            Py_DECREF(descr);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *offset = PyLong_FromSsize_t(((PyMemberDescrObject *)descr)->d_member->offset);
        Py_DECREF(descr);
        if (offset == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, offset);
    }
    return out;
}

static int is_int(PyObject *v) { return PyLong_CheckExact(v); }
static int is_text(PyObject *v) { return v == Py_None || PyUnicode_CheckExact(v); }

/* Whether the row's values (n of them) are what the flusher writes. */
static int well_typed(PyObject *row, Py_ssize_t n) {
    PyObject *ts = PyTuple_GET_ITEM(row, TS_AT);
    if (!is_int(ts))
        return 0;
    int overflow = 0;
    (void)PyLong_AsLongLongAndOverflow(ts, &overflow);
    if (overflow)
        return 0;
    if (!is_int(PyTuple_GET_ITEM(row, LEVEL_AT)))
        return 0;
    PyObject *pid = PyTuple_GET_ITEM(row, PID_AT);
    if (pid != Py_None && !is_int(pid))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == ID_AT || i == TS_AT || i == LEVEL_AT || i == PID_AT || i == FIELDS_AT)
            continue;
        if (!is_text(PyTuple_GET_ITEM(row, i)))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ fields
 *
 * A record's fields are JSON text, as a rule one flat object of short ASCII
 * strings and integers ({"status": 503, "code.lineno": 118, ...}): json's
 * scanner, called through parse_fields, took a third of a returned row's
 * cost.  flat_fields() reads exactly that case, the same dict json.loads
 * makes: ASCII text, an object whose keys are strings and whose values are
 * strings, integers, true, false or null, strings without a backslash or a
 * control character, JSON whitespace around the tokens.  It returns NULL
 * without an error for anything else (a float, a nested value, an escape,
 * text not ASCII, text that is not JSON), which goes to parse_fields as
 * before.  Keys and string values that repeat across the rows of one call
 * are one object (*seen*): str is immutable, each Record still has its own
 * dict. */

static const char *skip_space(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A JSON string at p (after its opening quote): its end quote, or NULL if it is not a plain one. */
static const char *plain_string_end(const char *p, const char *end) {
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p;
        if (c == '\\' || c < 0x20)
            return NULL;
        p++;
    }
    return NULL;
}

static PyObject *shared_str(PyObject *seen, const char *p, Py_ssize_t n) {
    PyObject *str = PyUnicode_FromStringAndSize(p, n);
    if (str == NULL || seen == NULL || n > 64)
        return str;
    PyObject *found = PyDict_SetDefault(seen, str, str); /* borrowed */
    if (found == NULL) {
        Py_DECREF(str);
        return NULL;
    }
    Py_INCREF(found);
    Py_DECREF(str);
    return found;
}

static PyObject *flat_fields(PyObject *text, PyObject *seen) {
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text))
        return NULL;
    const char *p = (const char *)PyUnicode_DATA(text);
    const char *end = p + PyUnicode_GET_LENGTH(text);
    p = skip_space(p, end);
    if (p >= end || *p != '{')
        return NULL;
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    p = skip_space(p + 1, end);
    if (p < end && *p == '}') {
        p = skip_space(p + 1, end);
        if (p == end)
            return dict;
        goto not_flat;
    }
    for (;;) {
        if (p >= end || *p != '"')
            goto not_flat;
        const char *q = plain_string_end(p + 1, end);
        if (q == NULL)
            goto not_flat;
        PyObject *key = shared_str(seen, p + 1, q - p - 1);
        if (key == NULL)
            goto fail;
        p = skip_space(q + 1, end);
        if (p >= end || *p != ':') {
            Py_DECREF(key);
            goto not_flat;
        }
        p = skip_space(p + 1, end);
        PyObject *value = NULL;
        if (p < end && *p == '"') {
            q = plain_string_end(p + 1, end);
            if (q != NULL) {
                value = shared_str(seen, p + 1, q - p - 1);
                if (value == NULL) {
                    Py_DECREF(key);
                    goto fail;
                }
                p = q + 1;
            }
        } else if (p < end && (*p == '-' || (*p >= '0' && *p <= '9'))) {
            /* An integer as JSON writes one: -?(0|[1-9][0-9]*), nothing of a float after it. */
            const char *start = p;
            if (*p == '-')
                p++;
            if (p < end && *p == '0')
                p++;
            else if (p < end && *p >= '1' && *p <= '9')
                while (p < end && *p >= '0' && *p <= '9')
                    p++;
            else
                p = start;
            if (p > start && (p == end || (*p != '.' && *p != 'e' && *p != 'E')) && p - start < 19) {
                char digits[24];
                memcpy(digits, start, p - start);
                digits[p - start] = 0;
                value = PyLong_FromString(digits, NULL, 10);
                if (value == NULL) {
                    Py_DECREF(key);
                    goto fail;
                }
            }
        } else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            value = Py_NewRef(Py_True);
            p += 4;
        } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            value = Py_NewRef(Py_False);
            p += 5;
        } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            value = Py_NewRef(Py_None);
            p += 4;
        }
        if (value == NULL) {
            Py_DECREF(key);
            goto not_flat;
        }
        int rc = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0)
            goto fail;
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            p = skip_space(p + 1, end);
            if (p == end)
                return dict;
        }
        goto not_flat;
    }
not_flat:
    Py_DECREF(dict);
    return NULL;
fail:
    Py_DECREF(dict);
    return NULL; /* with the error set */
}

static PyObject *build(PyObject *self, PyObject *args) {
    PyObject *rows, *offsets_obj, *parse_fields, *fallback;
    PyTypeObject *cls;
    int with_snippet;
    if (!PyArg_ParseTuple(args, "O!O!O!OOp", &PyList_Type, &rows, &PyType_Type, &cls, &PyTuple_Type, &offsets_obj,
                          &parse_fields, &fallback, &with_snippet))
        return NULL;
    Py_ssize_t slots = PyTuple_GET_SIZE(offsets_obj);
    Py_ssize_t n = slots - 1; /* the values of a row, the snippet left out */
    if (n <= FIELDS_AT || n <= PID_AT) {
        PyErr_SetString(PyExc_ValueError, "offsets: one per Record field, the snippet last");
        return NULL;
    }
    Py_ssize_t offsets[64];
    if (slots > 64) {
        PyErr_SetString(PyExc_ValueError, "offsets: at most 64");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < slots; i++) {
        offsets[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets_obj, i));
        if (offsets[i] == -1 && PyErr_Occurred())
            return NULL;
        if (offsets[i] < (Py_ssize_t)sizeof(PyObject) || offsets[i] + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
            PyErr_SetString(PyExc_ValueError, "offsets: not slots of this class");
            return NULL;
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    PyObject *seen = PyDict_New(); /* flat_fields' shared strings */
    if (seen == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != n + (with_snippet ? 1 : 0)) {
            PyErr_Format(PyExc_ValueError, "row %zd: a tuple of %zd values expected", r, n + (with_snippet ? 1 : 0));
            goto fail;
        }
        PyObject *snippet = with_snippet ? PyTuple_GET_ITEM(row, n) : Py_None;
        PyObject *record;
        if (is_text(snippet) && well_typed(row, n)) {
            PyObject *fields = flat_fields(PyTuple_GET_ITEM(row, FIELDS_AT), seen);
            if (fields == NULL && PyErr_Occurred())
                goto fail;
            if (fields == NULL)
                fields = PyObject_CallOneArg(parse_fields, PyTuple_GET_ITEM(row, FIELDS_AT));
            if (fields == NULL)
                goto fail;
            record = cls->tp_alloc(cls, 0);
            if (record == NULL) {
                Py_DECREF(fields);
                goto fail;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *value = i == FIELDS_AT ? fields : Py_NewRef(PyTuple_GET_ITEM(row, i));
                *(PyObject **)((char *)record + offsets[i]) = value;
            }
            *(PyObject **)((char *)record + offsets[n]) = Py_NewRef(snippet);
        } else {
            PyObject *values = with_snippet ? PyTuple_GetSlice(row, 0, n) : Py_NewRef(row);
            if (values == NULL)
                goto fail;
            record = PyObject_CallFunctionObjArgs(fallback, values, snippet, NULL);
            Py_DECREF(values);
            if (record == NULL)
                goto fail;
        }
        PyList_SET_ITEM(out, r, record);
    }
    Py_DECREF(seen);
    return out;
fail:
    Py_DECREF(seen);
    Py_DECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------ snippets
 *
 * snippets(rows, at, phrases, open, close, ellipsis, tokens) -> (rows, missing)
 *     FTS5's snippet(index, -1, open, close, ellipsis, tokens) of each row,
 *     made from the row's own text: rows are tuples whose last value is a
 *     placeholder, at the indexes of the index's columns in them (in the
 *     index's order), phrases the query's phrases in FTS5's order, each
 *     (tokens, prefix, counted): tokens a tuple of lowercase ASCII bytes,
 *     prefix whether the last one is a prefix, counted whether its matches
 *     are the row's instances (False for one that only excludes).  Returns
 *     the rows with their snippet last, and the indexes of those made here
 *     not (text not ASCII, with a NUL, not a str, no instance found), whose
 *     snippet the caller asks FTS5 for.  A row that only the list holds is
 *     given its snippet in place (the list's rows are then the ones
 *     returned); any other is copied.
 *
 * Why: FTS5's snippet() over an external-content index reads the row again
 * through the content table and tokenizes each column two or three times
 * (sentences, sizes, highlighting): most of a rare word's search per row.
 * For ASCII text unicode61's tokens are the runs of ASCII letters and digits,
 * lowercased, and a query of phrases AND-ed, OR-ed (phrases only) or NOT-ed
 * (one phrase) has as instances every place each counted phrase occurs:
 * the same instances, the same scoring (fts5SnippetFunction,
 * fts5SnippetScore, fts5HighlightCb), the same text.  store.py decides
 * which queries those are; tests/test_snippet.py compares with FTS5. */

typedef struct {
    int start, end; /* byte offsets */
} Tok;

typedef struct {
    int phrase, column, offset;
} Inst;

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

static int buf_add(Buf *b, const char *z, Py_ssize_t n) {
    if (n <= 0)
        return 0;
    if (b->n + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n)
            cap *= 2;
        char *p = PyMem_Realloc(b->p, cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, z, n);
    b->n += n;
    return 0;
}

#define MAX_COLUMNS 8
#define MAX_PHRASES 64
#define MAX_TOKEN 32000 /* FTS5 cuts longer tokens (FTS5_MAX_TOKEN_SIZE): not reproduced */

typedef struct {
    int n;                    /* tokens */
    int prefix;               /* the last token a prefix */
    int counted;              /* its matches are instances */
    const char *tok[MAX_PHRASES];
    int len[MAX_PHRASES];
} Phrase;

/* ASCII letters and digits, lowercased; 0 for every other byte (a separator to unicode61). */
static unsigned char folded[256];

static void fold_init(void) {
    for (int c = '0'; c <= '9'; c++)
        folded[c] = (unsigned char)c;
    for (int c = 'a'; c <= 'z'; c++)
        folded[c] = folded[c - 'a' + 'A'] = (unsigned char)c;
}

#define is_token_char(c) (folded[(unsigned char)(c)] != 0)

/* The unicode61 tokens of ASCII text (runs of letters and digits) appended to *toks from
 * index *used; how many, -1 on no memory, -2 on a token FTS5 would cut. */
static int tokenize(const char *z, int n, Tok **toks, int *cap, int used) {
    int count = 0, i = 0;
    while (i < n) {
        while (i < n && !is_token_char((unsigned char)z[i]))
            i++;
        if (i >= n)
            break;
        int s = i;
        while (i < n && is_token_char((unsigned char)z[i]))
            i++;
        if (i - s > MAX_TOKEN)
            return -2;
        if (used + count == *cap) {
            int c = *cap ? *cap * 2 : 256;
            Tok *t = PyMem_Realloc(*toks, c * sizeof(Tok));
            if (t == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            *toks = t;
            *cap = c;
        }
        (*toks)[used + count].start = s;
        (*toks)[used + count].end = i;
        count++;
    }
    return count;
}

static int token_is(const char *z, Tok t, const char *q, int qn, int prefix) {
    int n = t.end - t.start;
    if (prefix ? n < qn : n != qn)
        return 0;
    for (int i = 0; i < qn; i++)
        if (folded[(unsigned char)z[t.start + i]] != (unsigned char)q[i])
            return 0;
    return 1;
}

/* fts5SnippetScore */
static int score(const Inst *inst, int ninst, const Phrase *ph, int nphrase, unsigned char *seen, int col, int pos,
                 int ntoken, int docsize, int *adjusted) {
    int first = -1, last = 0, total = 0;
    long long end = (long long)pos + ntoken;
    memset(seen, 0, nphrase);
    for (int i = 0; i < ninst; i++) {
        if (inst[i].column == col && inst[i].offset >= pos && inst[i].offset < end) {
            total += seen[inst[i].phrase] ? 1 : 1000;
            seen[inst[i].phrase] = 1;
            if (first < 0)
                first = inst[i].offset;
            last = inst[i].offset + ph[inst[i].phrase].n;
        }
    }
    if (adjusted) {
        long long adj = first - (ntoken - (last - first)) / 2;
        if (adj + ntoken > docsize)
            adj = docsize - ntoken;
        if (adj < 0)
            adj = 0;
        *adjusted = (int)adj;
    }
    return total;
}

/* fts5CInstIterNext: the next run of overlapping instances in column col. */
typedef struct {
    const Inst *inst;
    int ninst, at, col, start, end;
    const Phrase *ph;
} Runs;

static void runs_next(Runs *r) {
    r->start = r->end = -1;
    while (r->at < r->ninst) {
        const Inst *in = &r->inst[r->at];
        if (in->column == r->col) {
            int end = in->offset - 1 + r->ph[in->phrase].n;
            if (r->start < 0) {
                r->start = in->offset;
                r->end = end;
            } else if (in->offset <= r->end) {
                if (end > r->end)
                    r->end = end;
            } else {
                break;
            }
        }
        r->at++;
    }
}

/* One row's snippet into out; 1 made, 0 not reproduced here, -1 error. */
static int snippet_of(PyObject *row, const Py_ssize_t *at, int ncol, const Phrase *ph, int nphrase, const char *open,
                      Py_ssize_t nopen, const char *close, Py_ssize_t nclose, const char *ellipsis,
                      Py_ssize_t nellipsis, int ntoken, Tok **toks, int *tokcap, Inst **insts, int *instcap,
                      int **firsts, int *firstcap, Buf *out) {
    const char *text[MAX_COLUMNS];
    int len[MAX_COLUMNS], ntok[MAX_COLUMNS];
    int ninst = 0, total_toks = 0;
    unsigned char seen[MAX_PHRASES];
    for (int c = 0; c < ncol; c++) {
        PyObject *v = PyTuple_GET_ITEM(row, at[c]);
        if (v == Py_None) {
            text[c] = NULL;
            len[c] = 0;
            continue;
        }
        if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) > INT_MAX / 2)
            return 0;
        text[c] = (const char *)PyUnicode_DATA(v);
        len[c] = (int)PyUnicode_GET_LENGTH(v);
        if (memchr(text[c], 0, len[c]) != NULL)
            return 0;
    }
    /* Every column's tokens, one after the other in *toks; the instances, by column, offset, phrase. */
    int base[MAX_COLUMNS];
    for (int c = 0; c < ncol; c++) {
        int n = text[c] ? tokenize(text[c], len[c], toks, tokcap, total_toks) : 0;
        if (n < 0)
            return n == -1 ? -1 : 0;
        base[c] = total_toks;
        ntok[c] = n;
        total_toks += n;
        const Tok *t = *toks + base[c];
        for (int i = 0; i < n; i++) {
            for (int p = 0; p < nphrase; p++) {
                if (!ph[p].counted || i + ph[p].n > n || folded[(unsigned char)text[c][t[i].start]] != (unsigned char)ph[p].tok[0][0])
                    continue;
                int k = 0;
                for (; k < ph[p].n; k++)
                    if (!token_is(text[c], t[i + k], ph[p].tok[k], ph[p].len[k], ph[p].prefix && k == ph[p].n - 1))
                        break;
                if (k < ph[p].n)
                    continue;
                if (ninst == *instcap) {
                    int cap = *instcap ? *instcap * 2 : 64;
                    Inst *m = PyMem_Realloc(*insts, cap * sizeof(Inst));
                    if (m == NULL) {
                        PyErr_NoMemory();
                        return -1;
                    }
                    *insts = m;
                    *instcap = cap;
                }
                (*insts)[ninst].phrase = p;
                (*insts)[ninst].column = c;
                (*insts)[ninst].offset = i;
                ninst++;
            }
        }
    }
    if (ninst == 0)
        return 0; /* FTS5 matched the row where this finds nothing: let it say */
    const Inst *inst = *insts;
    /* fts5SnippetFunction */
    int best_col = 0, best_start = 0, best_score = 0;
    for (int c = 0; c < ncol; c++) {
        const Tok *t = *toks + base[c];
        int n = ntok[c], nfirst = 0, here = 0;
        for (int ii = 0; ii < ninst && !here; ii++)
            here = inst[ii].column == c;
        if (!here)
            continue; /* nothing FTS5 does for it counts */
        if (n > *firstcap) {
            int *f = PyMem_Realloc(*firsts, n * sizeof(int));
            if (f == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            *firsts = f;
            *firstcap = n;
        }
        int *first = *firsts;
        for (int i = 0; i < n; i++) {
            if (i == 0) {
                first[nfirst++] = 0;
                continue;
            }
            int j = t[i].start - 1;
            char ch = 0;
            for (; j >= 0; j--) {
                ch = text[c][j];
                if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
                    break;
            }
            if (j != t[i].start - 1 && (ch == '.' || ch == ':'))
                first[nfirst++] = i;
        }
        for (int ii = 0; ii < ninst; ii++) {
            if (inst[ii].column != c)
                continue;
            int io = inst[ii].offset, adj;
            int s = score(inst, ninst, ph, nphrase, seen, c, io, ntoken, n, &adj);
            if (s > best_score) {
                best_score = s;
                best_col = c;
                best_start = adj;
            }
            if (nfirst && n > ntoken) {
                int jj = 0;
                for (; jj < nfirst - 1; jj++)
                    if (first[jj + 1] > io)
                        break;
                if (first[jj] < io) {
                    s = score(inst, ninst, ph, nphrase, seen, c, first[jj], ntoken, n, NULL);
                    s += first[jj] == 0 ? 120 : 100;
                    if (s > best_score) {
                        best_score = s;
                        best_col = c;
                        best_start = first[jj];
                    }
                }
            }
        }
    }
    const char *z = text[best_col];
    if (z == NULL)
        return 0;
    const Tok *t = *toks + base[best_col];
    int n = ntok[best_col];
    Runs runs = {inst, ninst, 0, best_col, -1, -1, ph};
    runs_next(&runs);
    int range_start = best_start, range_end = best_start + ntoken - 1;
    int off = 0, is_open = 0;
    out->n = 0;
    if (best_start > 0 && buf_add(out, ellipsis, nellipsis) < 0)
        return -1;
    while (runs.start >= 0 && runs.start < best_start)
        runs_next(&runs);
    /* fts5HighlightCb, per token */
    for (int pos = 0; pos < n; pos++) {
        int s = t[pos].start, e = t[pos].end;
        if (range_end >= 0) {
            if (pos < range_start || pos > range_end)
                continue;
            if (range_start && pos == range_start)
                off = s;
        }
        if (is_open && (pos <= runs.start || runs.start < 0) && s > off) {
            if (buf_add(out, close, nclose) < 0)
                return -1;
            is_open = 0;
        }
        if (pos == runs.start && !is_open) {
            if (buf_add(out, z + off, s - off) < 0 || buf_add(out, open, nopen) < 0)
                return -1;
            off = s;
            is_open = 1;
        }
        if (pos == runs.end) {
            if (!is_open) {
                if (buf_add(out, open, nopen) < 0)
                    return -1;
                is_open = 1;
            }
            if (buf_add(out, z + off, e - off) < 0)
                return -1;
            off = e;
            runs_next(&runs);
        }
        if (pos == range_end) {
            if (is_open) {
                if (runs.start >= 0 && pos >= runs.start) {
                    if (buf_add(out, z + off, e - off) < 0)
                        return -1;
                    off = e;
                }
                if (buf_add(out, close, nclose) < 0)
                    return -1;
                is_open = 0;
            }
            if (buf_add(out, z + off, e - off) < 0)
                return -1;
            off = e;
        }
    }
    if (is_open && buf_add(out, close, nclose) < 0)
        return -1;
    if (range_end >= n - 1) { /* the passage reaches the column's end: no ellipsis */
        if (buf_add(out, z + off, len[best_col] - off) < 0)
            return -1;
    } else if (buf_add(out, ellipsis, nellipsis) < 0) {
        return -1;
    }
    return 1;
}

static PyObject *snippets(PyObject *self, PyObject *args) {
    PyObject *rows, *at_obj, *phrases_obj;
    const char *open, *close, *ellipsis;
    Py_ssize_t nopen, nclose, nellipsis;
    int ntoken;
    if (!PyArg_ParseTuple(args, "O!O!O!s#s#s#i", &PyList_Type, &rows, &PyTuple_Type, &at_obj, &PyTuple_Type,
                          &phrases_obj, &open, &nopen, &close, &nclose, &ellipsis, &nellipsis, &ntoken))
        return NULL;
    if (ntoken > 64)
        ntoken = 64; /* FTS5's snippet() makes at most 64 tokens */
    Py_ssize_t ncol = PyTuple_GET_SIZE(at_obj), nphrase = PyTuple_GET_SIZE(phrases_obj);
    if (ncol < 1 || ncol > MAX_COLUMNS || nphrase < 1 || nphrase > MAX_PHRASES) {
        PyErr_SetString(PyExc_ValueError, "snippets: 1 to 8 columns and 1 to 64 phrases");
        return NULL;
    }
    Py_ssize_t at[MAX_COLUMNS];
    for (Py_ssize_t c = 0; c < ncol; c++) {
        at[c] = PyLong_AsSsize_t(PyTuple_GET_ITEM(at_obj, c));
        if (at[c] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "snippets: column indexes are >= 0");
            return NULL;
        }
    }
    Phrase *ph = PyMem_Calloc(nphrase, sizeof(Phrase));
    if (ph == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t p = 0; p < nphrase; p++) {
        PyObject *spec = PyTuple_GET_ITEM(phrases_obj, p), *tokens;
        int prefix, counted;
        if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "O!pp", &PyTuple_Type, &tokens, &prefix, &counted)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "snippets: a phrase is (tokens, prefix, counted)");
            PyMem_Free(ph);
            return NULL;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(tokens);
        if (n < 1 || n > MAX_PHRASES) {
            PyErr_SetString(PyExc_ValueError, "snippets: a phrase has 1 to 64 tokens");
            PyMem_Free(ph);
            return NULL;
        }
        ph[p].n = (int)n;
        ph[p].prefix = prefix;
        ph[p].counted = counted;
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *tok = PyTuple_GET_ITEM(tokens, k);
            if (!PyBytes_Check(tok) || PyBytes_GET_SIZE(tok) < 1 || PyBytes_GET_SIZE(tok) > MAX_TOKEN) {
                PyErr_SetString(PyExc_TypeError, "snippets: a token is non-empty bytes");
                PyMem_Free(ph);
                return NULL;
            }
            ph[p].tok[k] = PyBytes_AS_STRING(tok); /* the tuple holds it while this runs */
            ph[p].len[k] = (int)PyBytes_GET_SIZE(tok);
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(count), *missing = PyList_New(0), *result = NULL;
    Tok *toks = NULL;
    Inst *insts = NULL;
    int *firsts = NULL;
    int tokcap = 0, instcap = 0, firstcap = 0;
    Buf buf = {NULL, 0, 0};
    if (out == NULL || missing == NULL)
        goto done;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        Py_ssize_t width = PyTuple_CheckExact(row) ? PyTuple_GET_SIZE(row) : 0;
        int made = 0;
        if (width >= 1) {
            made = 1;
            for (Py_ssize_t c = 0; c < ncol; c++)
                if (at[c] >= width - 1)
                    made = 0;
        }
        if (!made) {
            PyErr_Format(PyExc_ValueError, "row %zd: a tuple holding the indexed columns and a snippet last", r);
            goto done;
        }
        made = snippet_of(row, at, (int)ncol, ph, (int)nphrase, open, nopen, close, nclose, ellipsis, nellipsis,
                          ntoken, &toks, &tokcap, &insts, &instcap, &firsts, &firstcap, &buf);
        if (made < 0)
            goto done;
        PyObject *snippet = made ? PyUnicode_DecodeUTF8(buf.p ? buf.p : "", buf.n, NULL) : Py_NewRef(Py_None);
        if (snippet == NULL)
            goto done;
        PyObject *copy;
        if (Py_REFCNT(row) == 1) {
            /* Only the list holds the row (fetchall's, as a rule): nothing else
             * can see it change, so its placeholder is replaced in place, as
             * CPython reuses a tuple no one else holds (zip, enumerate). */
            copy = Py_NewRef(row);
            Py_SETREF(((PyTupleObject *)copy)->ob_item[width - 1], snippet);
        } else {
            copy = PyTuple_New(width);
            if (copy == NULL) {
                Py_DECREF(snippet);
                goto done;
            }
            for (Py_ssize_t i = 0; i < width - 1; i++)
                PyTuple_SET_ITEM(copy, i, Py_NewRef(PyTuple_GET_ITEM(row, i)));
            PyTuple_SET_ITEM(copy, width - 1, snippet);
        }
        PyList_SET_ITEM(out, r, copy);
        if (!made) {
            PyObject *index = PyLong_FromSsize_t(r);
            if (index == NULL || PyList_Append(missing, index) < 0) {
                Py_XDECREF(index);
                goto done;
            }
            Py_DECREF(index);
        }
    }
    result = PyTuple_Pack(2, out, missing);
done:
    Py_XDECREF(out);
    Py_XDECREF(missing);
    PyMem_Free(ph);
    PyMem_Free(toks);
    PyMem_Free(insts);
    PyMem_Free(firsts);
    PyMem_Free(buf.p);
    return result;
}

static PyMethodDef methods[] = {
    {"slot_offsets", slot_offsets, METH_VARARGS, "Where each named slot of cls lies in its instances."},
    {"build", build, METH_VARARGS, "One instance of cls per row (see the module comment)."},
    {"snippets", snippets, METH_VARARGS, "FTS5's snippet() of each row, from its own text (see above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "janus_utils._records", "The rows of a search as Records, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    fold_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* Where this build expects the checked columns: store.py uses it only if
     * its own columns sit there. */
    PyObject *layout = Py_BuildValue("(iiiii)", ID_AT, TS_AT, LEVEL_AT, PID_AT, FIELDS_AT);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
