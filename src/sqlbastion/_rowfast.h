/*
 * sqlbastion._rowfast: what the three translation units share (types, small helpers,
 * the functions of _rowfast.c the protocol files call). See _rowfast.c for the strategy.
 */
#ifndef SQLBASTION_ROWFAST_H
#define SQLBASTION_ROWFAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Column operation codes; masking/rowref.py holds the same values (checked by a test). */
enum {
    OP_PASS = 0,        /* never in a column entry: the entry is None */
    OP_CALL = 1,        /* the Python masker for every value, NULL included */
    OP_FULL = 2,        /* AsciiOp "full" */
    OP_KEEP = 3,        /* AsciiOp "keep" */
    OP_MOBILE = 4,      /* AsciiOp "mobile" */
    OP_KEEP_DIGITS = 5, /* AsciiOp "keep_digits" */
    OP_EMAIL = 6,       /* AsciiOp "email" */
    OP_NAME = 7,        /* AsciiOp "name" (functions.chinese_name on an ASCII value) */
    OP_LAST = OP_NAME,
};

/* A kept prefix or suffix longer than this is refused in the column entry
 * (masking/spec.py bounds the parameters far lower). */
#define MAX_KEEP 4096
#define MAX_COLUMNS 65535 /* the Int16 column count of a DataRow; MySQL allows 4096 */
#define MYSQL_MAX_PIECE 0xFFFFFF

#define FULL_TEXT "****" /* functions.FULL_TEXT */
#define FULL_LEN 4

typedef struct {
    int code;
    Py_ssize_t first, last;
    PyObject *masker; /* borrowed from the columns tuple */
    PyObject *tally;  /* borrowed: a list whose item 0 counts values, or NULL */
    Py_ssize_t done;  /* values this call masked in C (added to the tally at the end) */
} Column;

typedef struct {
    Py_ssize_t start; /* PostgreSQL: offset of the Int32 length; MySQL: of the lenenc header */
    Py_ssize_t value; /* offset of the value bytes */
    Py_ssize_t len;   /* value length, -1 for NULL */
} Field;

/* The output: the bytearray is grown ahead of the writes and cut to size at the end. */
typedef struct {
    PyObject *out;
    Py_ssize_t start; /* its length at the call */
    Py_ssize_t len;   /* bytes written so far (including start) */
    Py_ssize_t cap;   /* its current size */
} Sink;

typedef struct {
    Py_buffer buf;
    Sink sink;
    Column *cols;
    Field *fields;
    Py_ssize_t ncols;
    Py_ssize_t masked_per_row;
} Call;

/* MySQL binary rows: a column's value layout (masking.rowref.binary_layout). */
#define LAYOUT_TEMPORAL (-1) /* one length byte (at most MAX_TEMPORAL), then that many bytes */
#define LAYOUT_LENENC (-2)   /* a string<lenenc> */
#define MAX_TEMPORAL 12

/* --- small helpers ----------------------------------------------------------------------- */

static inline char *sink_at(Sink *s) { return PyByteArray_AS_STRING(s->out) + s->len; }

static inline int all_ascii(const unsigned char *v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] & 0x80) {
            return 0;
        }
    }
    return 1;
}

static inline int all_digits(const unsigned char *v, Py_ssize_t n) {
    if (n == 0) {
        return 0; /* b"".isdigit() is False */
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
    }
    return 1;
}

static inline void res_data(PyObject *res, const char **data, Py_ssize_t *len) {
    if (PyBytes_Check(res)) {
        *data = PyBytes_AS_STRING(res);
        *len = PyBytes_GET_SIZE(res);
    } else {
        *data = PyByteArray_AS_STRING(res);
        *len = PyByteArray_GET_SIZE(res);
    }
}

static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* --- _rowfast.c -------------------------------------------------------------------------- */

int sink_reserve(Sink *s, Py_ssize_t need);
int sink_write(Sink *s, const void *src, Py_ssize_t n);
int sink_check(Sink *s);
Py_ssize_t ascii_op(const Column *c, const unsigned char *v, Py_ssize_t n, unsigned char *dst);
PyObject *call_masker(const Column *c, const unsigned char *v, Py_ssize_t n);
int call_begin(Call *k, PyObject *data, Py_ssize_t pos, Py_ssize_t end, PyObject *columns, PyObject *out);
int call_end(Call *k, int ok);
Py_ssize_t put_lenenc(unsigned char *dst, uint64_t n);

/* --- the entry points (_rowfast_pg.c, _rowfast_mysql.c) ------------------------------------ */

PyObject *pg_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *mysql_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *mysql_binary_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
