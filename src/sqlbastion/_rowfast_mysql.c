/*
 * sqlbastion._rowfast: MySQL row packets (page_protocol_basic_packets: int<3> payload length,
 * int<1> sequence id), text (page_protocol_com_query_response_text_resultset_row) and binary
 * (page_protocol_binary_resultset_row). Semantics: sqlbastion/masking/rowref.py
 * mysql_rewrite and mysql_binary_rewrite.
 */
#include "_rowfast.h"

/* --- MySQL text rows ------------------------------------------------------------------ */

/* Validate the text row payload data[start, end): ncols values exactly filling it. */
static int mysql_fields(const unsigned char *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t ncols, Field *f) {
    Py_ssize_t q = start;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (q >= end) {
            return 0;
        }
        unsigned char b = data[q];
        f[i].start = q;
        if (b == 0xFB) {
            f[i].value = q + 1;
            f[i].len = -1;
            q += 1;
            continue;
        }
        Py_ssize_t header;
        uint64_t len;
        if (b < 0xFB) {
            header = 1;
            len = b;
        } else {
            header = b == 0xFC ? 3 : b == 0xFD ? 4 : b == 0xFE ? 9 : 0;
            if (header == 0 || header > end - q) {
                return 0;
            }
            len = 0;
            for (Py_ssize_t j = header - 1; j >= 1; j--) {
                len = len << 8 | data[q + j];
            }
        }
        if (len > (uint64_t)(end - q - header)) {
            return 0;
        }
        f[i].value = q + header;
        f[i].len = (Py_ssize_t)len;
        q += header + (Py_ssize_t)len;
    }
    return q == end;
}

static int mysql_value(Sink *s, Column *c, const unsigned char *data, const Field *f) {
    const unsigned char *v = data + f->value;
    Py_ssize_t n = f->len;
    if (n >= 0 && c->code != OP_CALL && all_ascii(v, n)) {
        /* the masked value is at most n + FULL_LEN bytes: its length prefix at most 9 */
        if (sink_reserve(s, 9 + n + FULL_LEN) < 0) {
            return -1;
        }
        unsigned char tmp[9];
        unsigned char *dst = (unsigned char *)sink_at(s);
        /* Write the value after the widest prefix, then move it next to the actual one. */
        Py_ssize_t m = ascii_op(c, v, n, dst + 9);
        if (m >= 0) {
            Py_ssize_t h = put_lenenc(tmp, (uint64_t)m);
            memmove(dst + h, dst + 9, (size_t)m);
            memcpy(dst, tmp, (size_t)h);
            s->len += h + m;
            c->done++;
            return 0;
        }
    }
    if (n < 0 && c->code != OP_CALL) {
        return sink_write(s, "\xfb", 1); /* NULL stays NULL */
    }
    PyObject *res = call_masker(c, v, n);
    if (res == NULL || sink_check(s) < 0) {
        Py_XDECREF(res);
        return -1;
    }
    int rc;
    if (res == Py_None) {
        rc = sink_write(s, "\xfb", 1);
    } else {
        const char *d;
        Py_ssize_t len;
        res_data(res, &d, &len);
        unsigned char head[9];
        Py_ssize_t h = put_lenenc(head, (uint64_t)len);
        rc = sink_write(s, head, h);
        if (rc == 0) {
            rc = sink_write(s, d, len);
        }
    }
    Py_DECREF(res);
    return rc;
}

PyObject *mysql_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "mysql_rewrite takes 8 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[4]);
    Py_ssize_t seq = PyLong_AsSsize_t(args[5]);
    Py_ssize_t eof_limit = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (seq < 0 || seq > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "seq must be 0..255");
        return NULL;
    }
    Call k;
    if (call_begin(&k, args[0], pos, end, args[3], args[7]) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)k.buf.buf;
    Py_ssize_t rows = 0;
    int ok = 1;
    while (rows < limit && end - pos >= 4) {
        Py_ssize_t length = (Py_ssize_t)data[pos] | (Py_ssize_t)data[pos + 1] << 8 | (Py_ssize_t)data[pos + 2] << 16;
        /* A 0xFFFFFF-byte piece starts a packet of 16 MiB or more, an empty payload is no row,
         * another sequence id needs renumbering: all left to the caller's path. */
        if (length == MYSQL_MAX_PIECE || length == 0 || length > end - pos - 4 || data[pos + 3] != seq) {
            break;
        }
        Py_ssize_t start = pos + 4, msg_end = pos + 4 + length;
        unsigned char b0 = data[start];
        if (b0 == 0xFF || (b0 == 0xFE && length < eof_limit)) {
            break; /* ERR, or the EOF / OK that ends the rows (results.py ResponseRelay._on_row) */
        }
        if (!mysql_fields(data, start, msg_end, k.ncols, k.fields)) {
            break;
        }
        Py_ssize_t row_start = k.sink.len;
        if (sink_reserve(&k.sink, 4) < 0) {
            ok = 0;
            break;
        }
        sink_at(&k.sink)[3] = (char)seq;
        k.sink.len += 4;
        Py_ssize_t copy_from = start;
        for (Py_ssize_t i = 0; i < k.ncols && ok; i++) {
            Column *c = &k.cols[i];
            if (c->code == OP_PASS) {
                continue;
            }
            const Field *f = &k.fields[i];
            if (sink_write(&k.sink, data + copy_from, f->start - copy_from) < 0 ||
                mysql_value(&k.sink, c, data, f) < 0) {
                ok = 0;
                break;
            }
            copy_from = f->value + (f->len > 0 ? f->len : 0);
        }
        if (!ok || sink_write(&k.sink, data + copy_from, msg_end - copy_from) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t new_length = k.sink.len - row_start - 4;
        if (new_length >= MYSQL_MAX_PIECE) {
            k.sink.len = row_start; /* would need splitting into pieces: the caller's path frames it */
            break;
        }
        unsigned char *h = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + row_start;
        h[0] = (unsigned char)new_length;
        h[1] = (unsigned char)(new_length >> 8);
        h[2] = (unsigned char)(new_length >> 16);
        rows++;
        seq = (seq + 1) & 0xFF;
        pos = msg_end;
    }
    if (call_end(&k, ok) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnnn)", pos, rows, rows * k.masked_per_row, seq);
}

/* --- MySQL binary rows ---------------------------------------------------------------- */

/*
 * page_protocol_binary_resultset_row: 0x00, a NULL bitmap of (columns + 7 + 2) / 8
 * bytes (bit i + 2 for column i), then each non-NULL value in its binary form. A
 * column's layout (masking.rowref.binary_layout): >= 0 a fixed width, LAYOUT_TEMPORAL
 * one length byte (at most 12) and that many bytes, LAYOUT_LENENC a string<lenenc>.
 */

static int binary_fields(const unsigned char *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t ncols,
                         const Py_ssize_t *layout, Field *f) {
    Py_ssize_t nb = (ncols + 9) / 8;
    if (end - start < 1 + nb || data[start] != 0x00) {
        return 0;
    }
    const unsigned char *bitmap = data + start + 1;
    Py_ssize_t q = start + 1 + nb;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Py_ssize_t bit = i + 2;
        f[i].start = q;
        if (bitmap[bit >> 3] & (1 << (bit & 7))) {
            f[i].value = q;
            f[i].len = -1;
            continue;
        }
        Py_ssize_t header;
        uint64_t len;
        if (layout[i] >= 0) {
            header = 0;
            len = (uint64_t)layout[i];
        } else if (layout[i] == LAYOUT_TEMPORAL) {
            if (q >= end || data[q] > MAX_TEMPORAL) {
                return 0;
            }
            header = 1;
            len = data[q];
        } else {
            if (q >= end) {
                return 0;
            }
            unsigned char b = data[q];
            if (b < 0xFB) {
                header = 1;
                len = b;
            } else {
                header = b == 0xFC ? 3 : b == 0xFD ? 4 : b == 0xFE ? 9 : 0;
                if (header == 0 || header > end - q) {
                    return 0;
                }
                len = 0;
                for (Py_ssize_t j = header - 1; j >= 1; j--) {
                    len = len << 8 | data[q + j];
                }
            }
        }
        if (len > (uint64_t)(end - q - header)) {
            return 0;
        }
        f[i].value = q + header;
        f[i].len = (Py_ssize_t)len;
        q += header + (Py_ssize_t)len;
    }
    return q == end;
}

/* The replacement of a binary value in its column's layout; 0 when it does not fit the layout
 * (a fixed-width value of another width, a temporal value over 12 bytes). */
static int binary_value_fits(Py_ssize_t layout, Py_ssize_t len) {
    if (layout >= 0) {
        return len == layout;
    }
    if (layout == LAYOUT_TEMPORAL) {
        return len <= MAX_TEMPORAL;
    }
    return 1;
}

static int binary_write(Sink *s, Py_ssize_t layout, const void *d, Py_ssize_t len) {
    unsigned char head[9];
    Py_ssize_t h = 0;
    if (layout == LAYOUT_TEMPORAL) {
        head[0] = (unsigned char)len;
        h = 1;
    } else if (layout == LAYOUT_LENENC) {
        h = put_lenenc(head, (uint64_t)len);
    }
    if (sink_write(s, head, h) < 0) {
        return -1;
    }
    return sink_write(s, d, len);
}

/*
 * One masked binary value (or NULL): 1 written, 0 when the replacement does not fit the
 * layout (nothing written: the caller's path refuses the result), -1 on error.
 * *null_after tells whether the value is NULL in the rewritten row.
 */
static int binary_value(Sink *s, Column *c, const unsigned char *data, const Field *f, Py_ssize_t layout,
                        int *null_after) {
    const unsigned char *v = data + f->value;
    Py_ssize_t n = f->len;
    *null_after = 0;
    if (n >= 0 && c->code != OP_CALL && layout == LAYOUT_LENENC && all_ascii(v, n)) {
        if (sink_reserve(s, 9 + n + FULL_LEN) < 0) {
            return -1;
        }
        unsigned char tmp[9];
        unsigned char *dst = (unsigned char *)sink_at(s);
        Py_ssize_t m = ascii_op(c, v, n, dst + 9);
        if (m >= 0) {
            Py_ssize_t h = put_lenenc(tmp, (uint64_t)m);
            memmove(dst + h, dst + 9, (size_t)m);
            memcpy(dst, tmp, (size_t)h);
            s->len += h + m;
            c->done++;
            return 1;
        }
    }
    if (n < 0 && c->code != OP_CALL) {
        *null_after = 1; /* NULL stays NULL */
        return 1;
    }
    PyObject *res = call_masker(c, v, n);
    if (res == NULL || sink_check(s) < 0) {
        Py_XDECREF(res);
        return -1;
    }
    int rc = 1;
    if (res == Py_None) {
        *null_after = 1;
    } else {
        const char *d;
        Py_ssize_t len;
        res_data(res, &d, &len);
        if (!binary_value_fits(layout, len)) {
            rc = 0;
        } else if (binary_write(s, layout, d, len) < 0) {
            rc = -1;
        }
    }
    Py_DECREF(res);
    return rc;
}

PyObject *mysql_binary_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "mysql_binary_rewrite takes 9 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    Py_ssize_t seq = PyLong_AsSsize_t(args[6]);
    Py_ssize_t eof_limit = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (seq < 0 || seq > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "seq must be 0..255");
        return NULL;
    }
    PyObject *layout_obj = args[4];
    if (!PyTuple_Check(layout_obj) || !PyTuple_Check(args[3]) ||
        PyTuple_GET_SIZE(layout_obj) != PyTuple_GET_SIZE(args[3])) {
        PyErr_SetString(PyExc_ValueError, "layout must be a tuple with one entry per column");
        return NULL;
    }
    Call k;
    if (call_begin(&k, args[0], pos, end, args[3], args[8]) < 0) {
        return NULL;
    }
    Py_ssize_t *layout = PyMem_New(Py_ssize_t, (size_t)k.ncols);
    if (layout == NULL) {
        PyErr_NoMemory();
        call_end(&k, 0);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k.ncols; i++) {
        layout[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout_obj, i));
        if ((layout[i] == -1 && PyErr_Occurred()) || layout[i] < LAYOUT_LENENC || layout[i] > 8) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError, "column %zd: unknown layout", i);
            }
            PyMem_Free(layout);
            call_end(&k, 0);
            return NULL;
        }
    }
    const unsigned char *data = (const unsigned char *)k.buf.buf;
    Py_ssize_t nb = (k.ncols + 9) / 8;
    Py_ssize_t rows = 0;
    int ok = 1;
    while (rows < limit && end - pos >= 4) {
        Py_ssize_t length = (Py_ssize_t)data[pos] | (Py_ssize_t)data[pos + 1] << 8 | (Py_ssize_t)data[pos + 2] << 16;
        if (length == MYSQL_MAX_PIECE || length == 0 || length > end - pos - 4 || data[pos + 3] != seq) {
            break;
        }
        Py_ssize_t start = pos + 4, msg_end = pos + 4 + length;
        unsigned char b0 = data[start];
        if (b0 == 0xFF || (b0 == 0xFE && length < eof_limit)) {
            break;
        }
        if (!binary_fields(data, start, msg_end, k.ncols, layout, k.fields)) {
            break;
        }
        Py_ssize_t row_start = k.sink.len;
        if (sink_reserve(&k.sink, 5 + nb) < 0) {
            ok = 0;
            break;
        }
        char *h = sink_at(&k.sink);
        h[3] = (char)seq;
        memcpy(h + 4, data + start, (size_t)(1 + nb)); /* 0x00 and the NULL bitmap, updated below */
        Py_ssize_t bitmap_at = row_start + 5;
        k.sink.len += 5 + nb;
        Py_ssize_t copy_from = start + 1 + nb;
        int fits = 1;
        for (Py_ssize_t i = 0; i < k.ncols && ok && fits; i++) {
            Column *c = &k.cols[i];
            if (c->code == OP_PASS) {
                continue;
            }
            const Field *f = &k.fields[i];
            if (sink_write(&k.sink, data + copy_from, f->start - copy_from) < 0) {
                ok = 0;
                break;
            }
            int null_after = 0;
            int rc = binary_value(&k.sink, c, data, f, layout[i], &null_after);
            if (rc < 0) {
                ok = 0;
                break;
            }
            if (rc == 0) {
                fits = 0;
                break;
            }
            Py_ssize_t bit = i + 2;
            unsigned char *bm = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + bitmap_at;
            if (null_after) {
                bm[bit >> 3] |= (unsigned char)(1 << (bit & 7));
            } else {
                bm[bit >> 3] &= (unsigned char)~(1 << (bit & 7));
            }
            copy_from = f->value + (f->len > 0 ? f->len : 0);
        }
        if (!ok) {
            break;
        }
        if (!fits) {
            k.sink.len = row_start; /* the caller's path meets the value again and refuses the result */
            break;
        }
        if (sink_write(&k.sink, data + copy_from, msg_end - copy_from) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t new_length = k.sink.len - row_start - 4;
        if (new_length >= MYSQL_MAX_PIECE) {
            k.sink.len = row_start;
            break;
        }
        unsigned char *hh = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + row_start;
        hh[0] = (unsigned char)new_length;
        hh[1] = (unsigned char)(new_length >> 8);
        hh[2] = (unsigned char)(new_length >> 16);
        rows++;
        seq = (seq + 1) & 0xFF;
        pos = msg_end;
    }
    PyMem_Free(layout);
    if (call_end(&k, ok) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnnn)", pos, rows, rows * k.masked_per_row, seq);
}
