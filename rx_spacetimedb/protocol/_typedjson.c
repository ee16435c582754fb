/* Type-directed JSON parser: a row's or a frame's text straight to typed Python values, without
 * the lists, dicts and strings a generic parser builds first.
 *
 * An optional accelerator (rx_spacetimedb/protocol/fastpath.py); the pure-Python decoders are the
 * reference. It is a fast path only, like the generated decoders in sats.py: it takes the values
 * the server writes in the shapes it writes them, and for anything else (another field order, an
 * escape in a string, a value out of range, invalid JSON, ...) it answers FALLBACK and the caller
 * decodes that row with the Python decoder, which decodes it or raises the right ProtocolError.
 * So this file decides nothing about what is valid: where it answers, it must answer exactly what
 * the Python decoder answers (tests/protocol/test_typedjson.py and test_differential.py check that).
 *
 * A plan (nested tuples built by TypeCodec.plan) is compiled once into a tree of nodes, held by a
 * Plan object the garbage collector sees through. The module keeps its state per module object
 * (multi-phase init), and only the public C API from 3.13 on (private long-from-bytes below).
 * Run `bash .ci/sanitize` (ASan + UBSan over the protocol tests) before committing a change here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#include <structmember.h>
#endif
#ifndef Py_READONLY
#define Py_READONLY READONLY
#endif

enum {
    OP_INT, OP_STR, OP_BOOL, OP_F64, OP_F32, OP_SPECIAL, OP_OPTION, OP_PRODUCT, OP_ARRAY,
    OP_UNIT, OP_BYTES, OP_SKIP, OP_KEY, OP_VARIANT
};

/* A str's UTF-8 form, cached in the str (which its node holds). */
typedef struct {
    const char *s;
    Py_ssize_t n;
} Name;

typedef struct Node {
    int op;
    /* OP_INT */
    int wide;                   /* 128/256 bits: compare with lo_obj/hi_obj */
    int hex_ok;                 /* 256 bits: "0x..." strings are taken */
    int unsigned_256;           /* u256: any hex of at most 64 digits is in range */
    int int128, signed128;      /* u128/i128 */
    long long lo;               /* narrow: the range, as lo..hi (hi_u for unsigned 64) */
    unsigned long long hi;
    PyObject *lo_obj, *hi_obj;
    /* OP_F32 */
    double f32_max;
    /* OP_SPECIAL: key; OP_PRODUCT / OP_KEY: names */
    PyObject *key;
    PyObject *cls;              /* OP_SPECIAL, OP_PRODUCT */
    PyObject **setters;         /* OP_SPECIAL (one), OP_PRODUCT: slot descriptors, or NULL: call cls(*fields) */
    Py_ssize_t *offsets;        /* where each slot lives in the object, or -1: use its descriptor */
    Py_ssize_t nsetters;
    int untrack;                /* the class is a frozen dataclass: see build_slots */
    PyObject **names;           /* OP_PRODUCT, OP_KEY, OP_VARIANT (there: a str or None) */
    Name *utf8;                 /* the names (OP_SPECIAL: the key) as UTF-8, for comparing with the text */
    struct Node **fields;       /* OP_PRODUCT, OP_KEY */
    Py_ssize_t n;
    Py_ssize_t *columns;        /* OP_KEY: the key columns */
    Py_ssize_t ncolumns;
    struct Node *inner;         /* OP_SPECIAL, OP_OPTION, OP_ARRAY */
    PyObject **makers;          /* OP_VARIANT: per variant, a callable on the payload, or None */
    struct Node **wraps;        /* OP_VARIANT: per variant, a class built from its one slot, or a
                                 * SumValue from its three (name, payload, tag), or NULL */
    PyObject *sum_name, *sum_tag;   /* a SumValue wrap: the variant's name and tag */
    int object_only;            /* OP_VARIANT of a whole message: {"Name": payload} only (spec §4) */
} Node;

/* The module's state (one per module object: multi-phase init, PEP 489). */
typedef struct {
    PyObject *fallback;         /* answered for a row the fast path does not take */
    PyObject *catch;            /* exceptions of a row or variant class that mean "fall back" */
    PyTypeObject *plan_type;    /* Plan, a heap type of this module */
} State;

/* The internal "fall back" answer: never reaches Python. */
static char fallback_marker;
#define FB ((PyObject *)&fallback_marker)

/* ---- compiling a plan ---------------------------------------------------------------------- */

static void free_node(Node *node) {
    if (node == NULL) return;
    Py_XDECREF(node->lo_obj);
    Py_XDECREF(node->hi_obj);
    Py_XDECREF(node->key);
    Py_XDECREF(node->cls);
    Py_XDECREF(node->sum_name);
    Py_XDECREF(node->sum_tag);
    for (Py_ssize_t i = 0; i < node->nsetters; i++) Py_XDECREF(node->setters[i]);
    for (Py_ssize_t i = 0; i < node->n; i++) {
        if (node->makers) Py_XDECREF(node->makers[i]);
        if (node->names) Py_XDECREF(node->names[i]);
        if (node->fields) free_node(node->fields[i]);
        if (node->wraps) free_node(node->wraps[i]);
    }
    PyMem_Free(node->setters);
    PyMem_Free(node->offsets);
    PyMem_Free(node->makers);
    PyMem_Free(node->wraps);
    PyMem_Free(node->names);
    PyMem_Free(node->utf8);
    PyMem_Free(node->fields);
    PyMem_Free(node->columns);
    free_node(node->inner);
    PyMem_Free(node);
}

/* Whether instances of cls refuse attribute setting: a frozen dataclass (its __setattr__ raises).
 * Only those may leave the garbage collector's walks (build_slots): an object whose attributes
 * code can set may come to hold a container, and a cycle through it would never be freed. */
static int optional_attr(PyObject *obj, const char *name, PyObject **out) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttrString(obj, name, out);
#else
    *out = PyObject_GetAttrString(obj, name);
    if (*out != NULL) return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();
    return 0;
#endif
}

static int is_frozen_dataclass(PyObject *cls) {
    PyObject *params, *frozen;
    int found = optional_attr(cls, "__dataclass_params__", &params);
    if (found <= 0) return found;
    found = optional_attr(params, "frozen", &frozen);
    Py_DECREF(params);
    if (found <= 0) return found;
    found = frozen == Py_True;
    Py_DECREF(frozen);
    return found;
}

/* Slot descriptors of a generated class, and their offsets when they are plain object slots. */
static int compile_setters(Node *node, PyObject *setters, Py_ssize_t n) {
    if ((node->untrack = is_frozen_dataclass(node->cls)) < 0) return -1;
    node->setters = PyMem_Calloc(n, sizeof(PyObject *));
    node->offsets = PyMem_Calloc(n, sizeof(Py_ssize_t));
    if (!node->setters || !node->offsets) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyTuple_GET_ITEM(setters, i);
        node->setters[i] = Py_NewRef(descr);
        node->nsetters = i + 1;
        if (Py_TYPE(descr)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_ValueError, "plan: a setter is not a data descriptor");
            return -1;
        }
        node->offsets[i] = -1;
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == Py_T_OBJECT_EX && !(member->flags & Py_READONLY)
                    && PyObject_TypeCheck(descr, &PyMemberDescr_Type)
                    && PyType_IsSubtype((PyTypeObject *)node->cls, PyDescr_TYPE(descr)))
                node->offsets[i] = member->offset;
        }
    }
    return 0;
}

/* A class built from its one slot: the class and that slot's descriptor (OP_SPECIAL, variant wraps). */
static int compile_one_slot(Node *node, PyObject *cls, PyObject *descriptor) {
    node->cls = Py_NewRef(cls);
    PyObject *one = PyTuple_Pack(1, descriptor);
    if (!one) return -1;
    int err = compile_setters(node, one, 1);
    Py_DECREF(one);
    return err;
}

/* A name with no UTF-8 form (a lone surrogate) gets length -1: no text matches it, the row falls back. */
static void utf8_name(PyObject *name, Name *out) {
    out->s = PyUnicode_AsUTF8AndSize(name, &out->n);
    if (out->s == NULL) { PyErr_Clear(); out->s = ""; out->n = -1; }
}

static int tag_is(PyObject *tag, const char *name) {
    return PyUnicode_Check(tag) && PyUnicode_CompareWithASCIIString(tag, name) == 0;
}

static Node *compile_node(PyObject *plan, int depth);

/* value == the decimal digits? -1 on error. */
static int equals_digits(PyObject *value, const char *digits) {
    PyObject *other = PyLong_FromString(digits, NULL, 10);
    if (other == NULL) return -1;
    int equal = PyObject_RichCompareBool(value, other, Py_EQ);
    Py_DECREF(other);
    return equal;
}

/* Names and their nodes; a variant's name may be None (written by its tag: no key matches it). */
static int compile_fields(Node *node, PyObject *names, PyObject *fields, int depth, int none_ok) {
    if (!PyTuple_Check(names) || !PyTuple_Check(fields) || PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(fields)) {
        PyErr_SetString(PyExc_ValueError, "plan: names and fields must be tuples of one length");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    node->names = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    node->fields = PyMem_Calloc(n ? n : 1, sizeof(Node *));
    node->utf8 = PyMem_Calloc(n ? n : 1, sizeof(Name));
    if (!node->names || !node->fields || !node->utf8) { PyErr_NoMemory(); return -1; }
    node->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) && !(none_ok && name == Py_None)) {
            PyErr_SetString(PyExc_ValueError, "plan: names are str (a variant's may be None)");
            return -1;
        }
        node->names[i] = Py_NewRef(name);
        if (name == Py_None) { node->utf8[i].s = ""; node->utf8[i].n = -1; }
        else utf8_name(name, &node->utf8[i]);
        node->fields[i] = compile_node(PyTuple_GET_ITEM(fields, i), depth + 1);
        if (!node->fields[i]) return -1;
    }
    return 0;
}

static Node *compile_node(PyObject *plan, int depth) {
    if (depth > 200) { PyErr_SetString(PyExc_ValueError, "plan nested too deeply"); return NULL; }
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) < 1) {
        PyErr_SetString(PyExc_ValueError, "plan: every node is a tuple (tag, ...)");
        return NULL;
    }
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (!node) { PyErr_NoMemory(); return NULL; }
    PyObject *tag = PyTuple_GET_ITEM(plan, 0);
    Py_ssize_t size = PyTuple_GET_SIZE(plan);
#define ARG(i) PyTuple_GET_ITEM(plan, (i))
#define NEED(count) if (size != (count)) goto bad
    if (tag_is(tag, "int")) {               /* ("int", low, high, hex_ok) */
        NEED(4);
        if (!PyLong_CheckExact(ARG(1)) || !PyLong_CheckExact(ARG(2)) || !PyBool_Check(ARG(3))) goto bad;
        node->op = OP_INT;
        node->lo_obj = Py_NewRef(ARG(1));
        node->hi_obj = Py_NewRef(ARG(2));
        node->hex_ok = ARG(3) == Py_True;
        int overflow = 0;
        long long lo = PyLong_AsLongLongAndOverflow(ARG(1), &overflow);
        if (overflow || (lo == -1 && PyErr_Occurred())) { PyErr_Clear(); node->wide = 1; }
        node->unsigned_256 = node->hex_ok && lo == 0 && !overflow;
        int u128 = node->hex_ok ? 0 : equals_digits(ARG(2), "340282366920938463463374607431768211455");
        int i128 = node->hex_ok ? 0 : equals_digits(ARG(2), "170141183460469231731687303715884105727");
        if (u128 < 0 || i128 < 0) goto fail;
        node->int128 = u128 || i128;
        node->signed128 = i128;
        unsigned long long hi = PyLong_AsUnsignedLongLong(ARG(2));
        if (hi == (unsigned long long)-1 && PyErr_Occurred()) { PyErr_Clear(); node->wide = 1; }
        node->lo = lo;
        node->hi = hi;
    } else if (tag_is(tag, "str")) {
        NEED(1); node->op = OP_STR;
    } else if (tag_is(tag, "bool")) {
        NEED(1); node->op = OP_BOOL;
    } else if (tag_is(tag, "f64")) {
        NEED(1); node->op = OP_F64;
    } else if (tag_is(tag, "f32")) {        /* ("f32", overflow): |x| >= overflow is not an f32 */
        NEED(2);
        node->op = OP_F32;
        node->f32_max = PyFloat_AsDouble(ARG(1));
        if (node->f32_max == -1.0 && PyErr_Occurred()) goto fail;
    } else if (tag_is(tag, "unit")) {
        NEED(1); node->op = OP_UNIT;
    } else if (tag_is(tag, "bytes")) {
        NEED(1); node->op = OP_BYTES;
    } else if (tag_is(tag, "skip")) {
        NEED(1); node->op = OP_SKIP;
    } else if (tag_is(tag, "special")) {    /* ("special", key, cls, slot descriptor, inner) */
        NEED(5);
        node->op = OP_SPECIAL;
        if (!PyUnicode_Check(ARG(1)) || !PyType_Check(ARG(2))) goto bad;
        node->key = Py_NewRef(ARG(1));
        node->utf8 = PyMem_Calloc(1, sizeof(Name));
        if (!node->utf8) { PyErr_NoMemory(); goto fail; }
        utf8_name(node->key, node->utf8);
        if (compile_one_slot(node, ARG(2), ARG(3)) < 0) goto fail;
        if (!(node->inner = compile_node(ARG(4), depth + 1))) goto fail;
    } else if (tag_is(tag, "option") || tag_is(tag, "array")) {   /* (tag, inner) */
        NEED(2);
        node->op = tag_is(tag, "option") ? OP_OPTION : OP_ARRAY;
        if (!(node->inner = compile_node(ARG(1), depth + 1))) goto fail;
    } else if (tag_is(tag, "product")) {    /* ("product", cls, names, slot descriptors | None, fields) */
        NEED(5);
        node->op = OP_PRODUCT;
        if (!PyCallable_Check(ARG(1))) goto bad;
        node->cls = Py_NewRef(ARG(1));
        if (compile_fields(node, ARG(2), ARG(4), depth, 0) < 0) goto fail;
        if (node->n == 0) goto bad;
        if (ARG(3) != Py_None) {
            if (!PyType_Check(ARG(1)) || !PyTuple_Check(ARG(3)) || PyTuple_GET_SIZE(ARG(3)) != node->n) goto bad;
            if (compile_setters(node, ARG(3), node->n) < 0) goto fail;
        }
    } else if (tag_is(tag, "variant") || tag_is(tag, "message")) {
        /* ("variant", names, makers, payload plans, unmake) or ("message", names, makers, payload
         * plans). A maker: None (the payload itself), a callable, (class, slot descriptor), (class,)
         * for a class of no fields, or (SumValue, its three slot descriptors, name, tag); unmake is
         * the encoders' (not read here).
         * A "message" is a variant written only as {"Name": payload}, as the server writes frames. */
        node->object_only = tag_is(tag, "message");
        NEED(node->object_only ? 4 : 5);
        node->op = OP_VARIANT;
        if (compile_fields(node, ARG(1), ARG(3), depth, !node->object_only) < 0) goto fail;
        /* a sum of no variants (a type no value has) is valid: every value falls back, and the
         * Python decoder refuses it; a message type always has variants */
        if ((node->n == 0 && node->object_only) || !PyTuple_Check(ARG(2)) || PyTuple_GET_SIZE(ARG(2)) != node->n)
            goto bad;
        node->makers = PyMem_Calloc(node->n ? node->n : 1, sizeof(PyObject *));
        node->wraps = PyMem_Calloc(node->n ? node->n : 1, sizeof(Node *));
        if (!node->makers || !node->wraps) { PyErr_NoMemory(); goto fail; }
        for (Py_ssize_t i = 0; i < node->n; i++) {
            PyObject *maker = PyTuple_GET_ITEM(ARG(2), i);
            if (PyTuple_Check(maker)) {
                Py_ssize_t parts = PyTuple_GET_SIZE(maker);
                if (parts < 1 || parts == 3 || parts > 4 || !PyType_Check(PyTuple_GET_ITEM(maker, 0))) goto bad;
                Node *wrap = node->wraps[i] = PyMem_Calloc(1, sizeof(Node));
                if (!wrap) { PyErr_NoMemory(); goto fail; }
                if (parts == 1) {           /* no fields: allocated, nothing stored (nsetters 0) */
                    wrap->cls = Py_NewRef(PyTuple_GET_ITEM(maker, 0));
                    if ((wrap->untrack = is_frozen_dataclass(wrap->cls)) < 0) goto fail;
                } else if (parts == 2) {
                    if (compile_one_slot(wrap, PyTuple_GET_ITEM(maker, 0), PyTuple_GET_ITEM(maker, 1)) < 0)
                        goto fail;
                } else {                    /* a SumValue: slots (name, value, tag) */
                    PyObject *slots = PyTuple_GET_ITEM(maker, 1);
                    if (!PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != 3
                            || !PyUnicode_Check(PyTuple_GET_ITEM(maker, 2))
                            || !PyLong_CheckExact(PyTuple_GET_ITEM(maker, 3))) goto bad;
                    wrap->cls = Py_NewRef(PyTuple_GET_ITEM(maker, 0));
                    if (compile_setters(wrap, slots, 3) < 0) goto fail;
                    wrap->sum_name = Py_NewRef(PyTuple_GET_ITEM(maker, 2));
                    wrap->sum_tag = Py_NewRef(PyTuple_GET_ITEM(maker, 3));
                }
                maker = Py_None;
            }
            node->makers[i] = Py_NewRef(maker);
            if (maker != Py_None && !PyCallable_Check(maker)) goto bad;
        }
    } else if (tag_is(tag, "key")) {        /* ("key", names, fields, columns): a row's key alone */
        NEED(4);
        node->op = OP_KEY;
        if (compile_fields(node, ARG(1), ARG(2), depth, 0) < 0) goto fail;
        PyObject *columns = ARG(3);
        if (!PyTuple_Check(columns) || PyTuple_GET_SIZE(columns) == 0) goto bad;
        node->ncolumns = PyTuple_GET_SIZE(columns);
        node->columns = PyMem_Calloc(node->ncolumns, sizeof(Py_ssize_t));
        if (!node->columns) { PyErr_NoMemory(); goto fail; }
        for (Py_ssize_t i = 0; i < node->ncolumns; i++) {
            Py_ssize_t c = PyLong_AsSsize_t(PyTuple_GET_ITEM(columns, i));
            if (c == -1 && PyErr_Occurred()) goto fail;
            if (c < 0 || c >= node->n || node->fields[c]->op == OP_SKIP) goto bad;
            node->columns[i] = c;
        }
    } else {
        goto bad;
    }
    return node;
#undef ARG
#undef NEED
bad:
    if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "plan: bad node %R", plan);
fail:
    free_node(node);
    return NULL;
}

/* ---- the parser ---------------------------------------------------------------------------- */

/* The text as UTF-8 bytes: an ASCII str's own buffer, else its cached UTF-8 form. */
typedef struct {
    const unsigned char *s;
    Py_ssize_t pos, len;
    int ascii;                  /* byte offsets are character offsets */
    State *state;               /* the module's: its fallback exceptions and exact parser */
} Parser;

/* An integer from its two's complement bytes: the public call from 3.13, the private one below. */
static PyObject *long_from_bytes(const unsigned char *bytes, size_t n, int little_endian, int is_signed) {
#if PY_VERSION_HEX >= 0x030D0000
    int order = little_endian ? Py_ASNATIVEBYTES_LITTLE_ENDIAN : Py_ASNATIVEBYTES_BIG_ENDIAN;
    return is_signed ? PyLong_FromNativeBytes(bytes, n, order) : PyLong_FromUnsignedNativeBytes(bytes, n, order);
#else
    return _PyLong_FromByteArray(bytes, n, little_endian, is_signed);
#endif
}

#define MAX_DEPTH 512

/* hex digit values, -1 for other bytes */
static const signed char HEX[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1, -1, -1, -1, -1, -1,
    -1, 10, 11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, 10, 11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};
#define PEEK(p) ((p)->pos < (p)->len ? (Py_UCS4)(p)->s[(p)->pos] : (Py_UCS4)0xFFFFFFFF)

static inline void skip_ws(Parser *p) {
    while (p->pos < p->len) {
        Py_UCS4 c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Skip white space, then take character c; 0 if it is not there. */
static inline int take(Parser *p, Py_UCS4 c) {
    skip_ws(p);
    if (PEEK(p) != c) return 0;
    p->pos++;
    return 1;
}

static int take_word(Parser *p, const char *word) {
    skip_ws(p);
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    if (p->len - p->pos < n) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p->s[p->pos + i] != (unsigned char)word[i]) return 0;
    p->pos += n;
    return 1;
}

/* The unit value: [] or {}. */
static int take_unit(Parser *p) {
    if (take(p, '[')) return take(p, ']');
    return take(p, '{') && take(p, '}');
}

/* The end of the run of plain string bytes from i: up to a quote, a backslash or a control
 * character (or the end), eight bytes at a time while none of the eight is one. */
static inline Py_ssize_t plain_run(const unsigned char *s, Py_ssize_t i, Py_ssize_t len) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (uint64_t v; len - i >= 8; i += 8) {
        memcpy(&v, s + i, 8);
        uint64_t quote = v ^ (ones * '"'), backslash = v ^ (ones * '\\');
        uint64_t found = (((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)
                          | ((v - ones * 0x20) & ~v)) & highs;
        if (found) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* The lowest flagged byte is always a true one (a borrow only runs upwards): it is the
             * first quote, backslash or control character. */
            return i + (__builtin_ctzll(found) >> 3);
#else
            break;
#endif
        }
    }
    while (i < len && s[i] != '"' && s[i] != '\\' && s[i] >= 0x20) i++;
    return i;
}

/* A string without escapes: [start, end) of its content, after the closing quote. 0: not one. */
static int scan_plain_string(Parser *p, Py_ssize_t *start, Py_ssize_t *end) {
    if (!take(p, '"')) return 0;
    *start = p->pos;
    p->pos = plain_run(p->s, p->pos, p->len);
    if (p->pos >= p->len || p->s[p->pos] != '"') return 0;
    *end = p->pos++;
    return 1;
}

static PyObject *slice(Parser *p, Py_ssize_t start, Py_ssize_t end);

static int hex4(Parser *p, Py_ssize_t at) {
    if (p->len - at < 4) return -1;
    int value = 0;
    for (int i = 0; i < 4; i++) {
        int nibble = HEX[p->s[at + i]];
        if (nibble < 0) return -1;
        value = value << 4 | nibble;
    }
    return value;
}

/* Room for `more` bytes in the escaped string's buffer: on the stack first, then the heap. */
static int reserve(char **buf, Py_ssize_t *cap, Py_ssize_t n, Py_ssize_t more, char *stack) {
    if (*cap - n >= more) return 0;
    Py_ssize_t want = *cap;
    while (want - n < more) want *= 2;
    char *bigger = *buf == stack ? PyMem_Malloc(want) : PyMem_Realloc(*buf, want);
    if (bigger == NULL) { PyErr_NoMemory(); return -1; }
    if (*buf == stack) memcpy(bigger, stack, (size_t)n);
    *buf = bigger;
    *cap = want;
    return 0;
}

/* A JSON string with escapes, its opening quote at `start`: decoded into UTF-8, then a str.
 * FB for what is not JSON (a control character, a bad escape, a lone surrogate). */
static PyObject *parse_escaped_string(Parser *p, Py_ssize_t start) {
    char stack[256];
    char *buf = stack;
    Py_ssize_t cap = sizeof stack, n = 0;
    int ascii = p->ascii;                   /* the bytes so far are all ASCII */
    PyObject *result = FB;
    p->pos = start + 1;
    while (p->pos < p->len) {
        /* a run of plain bytes (maybe none), then a quote or an escape */
        Py_ssize_t run = plain_run(p->s, p->pos, p->len), k = run - p->pos;
        if (reserve(&buf, &cap, n, k + 4, stack) < 0) { result = NULL; goto done; }
        memcpy(buf + n, p->s + p->pos, (size_t)k);
        n += k;
        p->pos = run;
        if (run >= p->len) break;           /* no closing quote */
        unsigned char c = p->s[run];
        if (c == '"') {
            p->pos++;
            if (ascii) {
                result = PyUnicode_New(n, 127);
                if (result != NULL) memcpy(PyUnicode_DATA(result), buf, (size_t)n);
            } else {
                result = PyUnicode_DecodeUTF8(buf, n, NULL);
            }
            goto done;
        }
        if (c < 0x20 || p->pos + 1 >= p->len) goto done;
        c = p->s[p->pos + 1];
        p->pos += 2;
        switch (c) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            int cp = hex4(p, p->pos);
            if (cp < 0) goto done;
            p->pos += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) goto done;      /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {                /* must be followed by a low one */
                if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') goto done;
                int low = hex4(p, p->pos + 2);
                if (low < 0xDC00 || low > 0xDFFF) goto done;
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp >= 0x80) ascii = 0;
            if (cp < 0x80) {
                buf[n++] = (char)cp;
            } else if (cp < 0x800) {
                buf[n++] = (char)(0xC0 | cp >> 6);
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                buf[n++] = (char)(0xE0 | cp >> 12);
                buf[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[n++] = (char)(0xF0 | cp >> 18);
                buf[n++] = (char)(0x80 | (cp >> 12 & 0x3F));
                buf[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            goto done;
        }
    }
done:
    if (buf != stack) PyMem_Free(buf);
    return result;
}

/* A JSON string value. */
static PyObject *parse_string(Parser *p) {
    Py_ssize_t start, end;
    skip_ws(p);
    Py_ssize_t quote = p->pos;
    if (scan_plain_string(p, &start, &end)) return slice(p, start, end);
    if (quote < p->len && p->s[quote] == '"' && p->pos < p->len && p->s[p->pos] == '\\')
        return parse_escaped_string(p, quote);
    return FB;
}

/* The next token is the object key `name` (no escapes), then a colon. */
static int take_key(Parser *p, const Name *name) {
    Py_ssize_t start, end;
    if (!scan_plain_string(p, &start, &end)) return 0;
    return end - start == name->n && memcmp(p->s + start, name->s, (size_t)name->n) == 0 && take(p, ':');
}

/* A new str of the bytes [start, end) of the text. */
static PyObject *slice(Parser *p, Py_ssize_t start, Py_ssize_t end) {
    if (!p->ascii) return PyUnicode_DecodeUTF8((const char *)p->s + start, end - start, NULL);
    PyObject *str = PyUnicode_New(end - start, 127);
    if (str != NULL) memcpy(PyUnicode_DATA(str), p->s + start, (size_t)(end - start));
    return str;
}

/* Eight ASCII digits at s? One 64-bit load, any byte order (Lemire's test). */
static inline int eight_digits(const unsigned char *s, uint64_t *word) {
    memcpy(word, s, 8);
    return ((*word & 0xF0F0F0F0F0F0F0F0ULL)
            | (((*word + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) == 0x3333333333333333ULL;
}

/* The value of eight ASCII digits at s. */
static inline uint64_t eight_digits_value(const unsigned char *s) {
#if PY_LITTLE_ENDIAN
    uint64_t word;                          /* three multiplications instead of eight steps */
    memcpy(&word, s, 8);
    word -= 0x3030303030303030ULL;
    word = word * 10 + (word >> 8);
    return (((word & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32)))
            + (((word >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
#else
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) value = value * 10 + (uint64_t)(s[i] - '0');
    return value;
#endif
}

/* The value of the digits [i, end) (all checked to be digits), at most 19 of them. */
static uint64_t digits_value(const unsigned char *s, Py_ssize_t i, Py_ssize_t end) {
    uint64_t value = 0;
    for (; end - i >= 8; i += 8) value = value * 100000000ULL + eight_digits_value(s + i);
    for (; i < end; i++) value = value * 10 + (uint64_t)(s[i] - '0');
    return value;
}

/* Past a run of digits, eight at a time while there are eight. */
static inline void skip_digits(Parser *p) {
    uint64_t word;
    while (p->len - p->pos >= 8 && eight_digits(p->s + p->pos, &word)) p->pos += 8;
    while (p->pos < p->len && (unsigned)(p->s[p->pos] - '0') < 10u) p->pos++;
}

/* A JSON number token, by the grammar. *is_int: no fraction, no exponent. 0: not a number. */
static int scan_number(Parser *p, Py_ssize_t *start, int *is_int) {
    skip_ws(p);
    *start = p->pos;
    *is_int = 1;
    if (PEEK(p) == '-') p->pos++;
    Py_UCS4 c = PEEK(p);
    if (c == '0') {
        p->pos++;
    } else if (c >= '1' && c <= '9') {
        skip_digits(p);
    } else {
        return 0;
    }
    if (PEEK(p) == '.') {
        *is_int = 0;
        p->pos++;
        if (!((c = PEEK(p)) >= '0' && c <= '9')) return 0;
        skip_digits(p);
    }
    c = PEEK(p);
    if (c == 'e' || c == 'E') {
        *is_int = 0;
        p->pos++;
        c = PEEK(p);
        if (c == '+' || c == '-') p->pos++;
        if (!((c = PEEK(p)) >= '0' && c <= '9')) return 0;
        while ((c = PEEK(p)) >= '0' && c <= '9') p->pos++;
    }
    c = PEEK(p);  /* "1x", "12a": not a number token the way a JSON parser reads it */
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '+')
        return 0;
    return 1;
}

/* Copy [start, end) (ASCII only) into buf of size cap, NUL-terminated; 0 if it does not fit. */
static int copy_ascii(Parser *p, Py_ssize_t start, Py_ssize_t end, char *buf, Py_ssize_t cap) {
    if (end - start >= cap) return 0;
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS4 c = p->s[i];
        if (c > 127) return 0;
        buf[i - start] = (char)c;
    }
    buf[end - start] = '\0';
    return 1;
}

static PyObject *in_range(Node *node, PyObject *value) {
    int ok = PyObject_RichCompareBool(node->lo_obj, value, Py_LE);
    if (ok > 0) ok = PyObject_RichCompareBool(value, node->hi_obj, Py_LE);
    if (ok > 0) return value;
    Py_DECREF(value);
    return ok < 0 ? NULL : FB;
}

static PyObject *parse_int(Parser *p, Node *node) {
    Py_ssize_t start;
    int is_int;
    char buf[100];
    skip_ws(p);
    if (node->hex_ok && PEEK(p) == '"') {   /* 256-bit: "[+-]?0[xX][0-9a-fA-F]+", from its bytes */
        Py_ssize_t s, e;
        if (!scan_plain_string(p, &s, &e)) return FB;
        const unsigned char *h = p->s + s, *stop = p->s + e;
        int minus = 0, plain = 1;
        if (h < stop && (*h == '+' || *h == '-')) { minus = *h == '-'; plain = 0; h++; }
        if (stop - h < 3 || h[0] != '0' || (h[1] != 'x' && h[1] != 'X')) return FB;
        h += 2;
        while (stop - h > 1 && *h == '0') h++;
        Py_ssize_t n = stop - h;
        if (n > 64) return FB;                 /* beyond 256 bits: out of range, Python says so */
        unsigned char bytes[32] = {0};
        int bad = 0;                          /* any HEX of -1 makes it negative */
        int j = 31;
        for (; stop - h >= 2; stop -= 2, j--) {   /* a byte per two digits, from the last */
            int high = HEX[stop[-2]], low = HEX[stop[-1]];
            bad |= high | low;
            bytes[j] = (unsigned char)(((unsigned)high << 4) | ((unsigned)low & 15u));
        }
        if (stop > h) {                       /* an odd count: the first digit alone */
            int low = HEX[stop[-1]];
            bad |= low;
            bytes[j] = (unsigned char)((unsigned)low & 15u);
        }
        if (bad < 0) return FB;
        PyObject *value = long_from_bytes(bytes, 32, 0, 0);
        if (value != NULL && minus) Py_SETREF(value, PyNumber_Negative(value));
        if (value == NULL) return NULL;
        if (node->unsigned_256 && plain) return value;   /* at most 64 digits: always a u256 */
        return in_range(node, value);
    }
    if (!scan_number(p, &start, &is_int) || !is_int) return FB;
    Py_ssize_t end = p->pos;
    int negative = p->s[start] == '-';
    Py_ssize_t digits = end - start - negative;
#ifdef __SIZEOF_INT128__
    if (node->int128) {                     /* u128/i128 in 128-bit arithmetic, range and all */
        const unsigned __int128 all = ~(unsigned __int128)0;
        static const unsigned long long tens[] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL,
            1000000ULL, 10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL,
            1000000000000ULL, 10000000000000ULL, 100000000000000ULL, 1000000000000000ULL,
            10000000000000000ULL, 100000000000000000ULL, 1000000000000000000ULL};
        unsigned __int128 magnitude = 0;
        if (digits > 39) return FB;
        /* 18 digits at a time in 64 bits, one 128-bit step per chunk: 38 digits cannot overflow;
         * a 39th is added with a check against constants */
        Py_ssize_t i = start + negative, head = digits == 39 ? end - 1 : end;
        while (i < head) {
            Py_ssize_t stop = head - i > 18 ? i + 18 : head;
            magnitude = magnitude * tens[stop - i] + digits_value(p->s, i, stop);
            i = stop;
        }
        if (head < end) {
            unsigned last = (unsigned)(p->s[head] - '0');
            if (magnitude > all / 10 || (magnitude == all / 10 && last > (unsigned)(all % 10))) return FB;
            magnitude = magnitude * 10 + last;
        }
        if (magnitude == 0) negative = 0;
        unsigned __int128 limit = node->signed128 ? ((unsigned __int128)1 << 127) - !negative
                                                  : (negative ? 0 : all);
        if (magnitude > limit) return FB;
        if (magnitude <= (unsigned __int128)LLONG_MAX)
            return PyLong_FromLongLong(negative ? -(long long)magnitude : (long long)magnitude);
        unsigned __int128 bits = negative ? ~magnitude + 1 : magnitude;   /* two's complement */
        /* its bytes in the machine's order, as they are in memory */
        return long_from_bytes((const unsigned char *)&bits, 16, PY_LITTLE_ENDIAN, node->signed128);
    }
#endif
    if (digits <= 19) {                     /* 19 digits stay below 2^64 */
        unsigned long long magnitude = digits_value(p->s, start + negative, end);
        if (negative && magnitude == 0) negative = 0;   /* "-0" is 0 */
        if (!node->wide) {
            if (negative) {
                if (node->lo >= 0 || magnitude > (unsigned long long)(-(node->lo + 1)) + 1) return FB;
                return PyLong_FromLongLong(magnitude == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)magnitude);
            }
            if (magnitude > node->hi) return FB;
            return PyLong_FromUnsignedLongLong(magnitude);
        }
        PyObject *value = negative
            ? (magnitude <= (unsigned long long)LLONG_MAX ? PyLong_FromLongLong(-(long long)magnitude) : NULL)
            : PyLong_FromUnsignedLongLong(magnitude);
        if (value == NULL && !PyErr_Occurred()) {
            if (!copy_ascii(p, start, end, buf, sizeof buf)) return FB;
            value = PyLong_FromString(buf, NULL, 10);
        }
        return value ? in_range(node, value) : NULL;
    }
    if (!node->wide || !copy_ascii(p, start, end, buf, sizeof buf)) return FB;
    PyObject *value = PyLong_FromString(buf, NULL, 10);
    return value ? in_range(node, value) : NULL;
}

/* Clinger's fast path: a decimal of at most 19 significant digits whose mantissa is exact in a
 * double (< 2^53) and whose power of ten is exact too (|e| <= 22) converts with one correctly
 * rounded multiplication or division, so the result is what strtod gives. Else -1. */
static int fast_decimal(Parser *p, Py_ssize_t start, Py_ssize_t end, double *out) {
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    static const double powers[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    unsigned long long mantissa = 0;
    int digits = 0, exponent = 0, negative = 0;
    Py_ssize_t i = start;
    Py_UCS4 c = p->s[i];
    if (c == '-') { negative = 1; i++; }
    int fraction = 0;
    for (; i < end; i++) {
        c = p->s[i];
        if (c == '.') { fraction = 1; continue; }
        if (c == 'e' || c == 'E') break;
        if (mantissa == 0 && c == '0') { if (fraction) exponent--; continue; }
        if (++digits > 19) return -1;
        mantissa = mantissa * 10 + (c - '0');
        if (fraction) exponent--;
    }
    if (i < end) {   /* the exponent */
        int sign = 1, value = 0;
        c = p->s[++i];
        if (c == '+' || c == '-') { sign = c == '-' ? -1 : 1; i++; }
        for (; i < end; i++) {
            if (value > 10000) return -1;
            value = value * 10 + (int)(p->s[i] - '0');
        }
        exponent += sign * value;
    }
    double value;
    if (mantissa == 0) value = 0.0;
    else if (mantissa > (1ULL << 53) || exponent < -22 || exponent > 22) return -1;
    else value = exponent < 0 ? (double)mantissa / powers[-exponent] : (double)mantissa * powers[exponent];
    *out = negative ? -value : value;
    return 0;
#else
    (void)p; (void)start; (void)end; (void)out;
    return -1;
#endif
}

static PyObject *parse_float(Parser *p, Node *node) {
    Py_ssize_t start;
    int is_int;
    char buf[64];
    double value;
    skip_ws(p);
    if (PEEK(p) == 'n') return take_word(p, "null") ? PyFloat_FromDouble(Py_NAN) : FB;
    if (!scan_number(p, &start, &is_int)) return FB;
    Py_ssize_t end = p->pos;
    if (is_int && end - start > 15) return FB;   /* float(int): leave huge integers to Python */
    if (fast_decimal(p, start, end, &value) < 0) {
        if (!copy_ascii(p, start, end, buf, sizeof buf)) return FB;
        char *stop;
        value = PyOS_string_to_double(buf, &stop, NULL);
        if (value == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return FB; }
        if (*stop != '\0') return FB;
    }
    if (isinf(value)) return FB;
    if (is_int && value == 0.0) value = 0.0;        /* float(int("-0")) is 0.0, not -0.0 */
    if (node->op == OP_F32 && !(value > -node->f32_max && value < node->f32_max)) return FB;
    return PyFloat_FromDouble(value);
}

/* A JSON value of any shape, checked by the grammar and skipped; 0 if it is not one. */
static int skip_value(Parser *p, int depth) {
    if (depth > MAX_DEPTH) return 0;
    skip_ws(p);
    Py_UCS4 c = PEEK(p);
    if (c == '"') {
        p->pos++;
        while ((p->pos = plain_run(p->s, p->pos, p->len)) < p->len) {
            c = p->s[p->pos++];
            if (c == '"') return 1;
            if (c < 0x20) return 0;
            if (c == '\\') {
                c = PEEK(p);
                p->pos++;
                if (c == 'u') {   /* as orjson: surrogates only as a high-then-low pair */
                    int cp = hex4(p, p->pos);
                    if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return 0;
                    p->pos += 4;
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') return 0;
                        int low = hex4(p, p->pos + 2);
                        if (low < 0xDC00 || low > 0xDFFF) return 0;
                        p->pos += 6;
                    }
                } else if (c > 127 || c == 0 || !strchr("\"\\/bfnrt", (int)c)) {
                    return 0;
                }
            }
        }
        return 0;
    }
    if (c == '[' || c == '{') {
        Py_UCS4 close = c == '[' ? ']' : '}';
        p->pos++;
        if (take(p, close)) return 1;
        do {
            if (close == '}') {
                skip_ws(p);
                if (PEEK(p) != '"' || !skip_value(p, depth + 1) || !take(p, ':')) return 0;
            }
            if (!skip_value(p, depth + 1)) return 0;
        } while (take(p, ','));
        return take(p, close);
    }
    if (c == 't') return take_word(p, "true");
    if (c == 'f') return take_word(p, "false");
    if (c == 'n') return take_word(p, "null");
    Py_ssize_t start;
    int is_int;
    if (!scan_number(p, &start, &is_int)) return 0;
    /* A number that could overflow a double, which orjson refuses: leave it to Python. At most 300
     * characters, and with an exponent at most 200 and an exponent of two digits, it cannot. */
    Py_ssize_t len = p->pos - start;
    if (len > 300) return 0;
    for (Py_ssize_t i = start; i < p->pos; i++) {
        if ((p->s[i] | 0x20) != 'e') continue;
        Py_ssize_t digits = p->pos - i - 1 - (p->s[i + 1] == '+' || p->s[i + 1] == '-');
        if (digits > 2 || len > 200) return 0;
    }
    return 1;
}

static PyObject *parse(Parser *p, Node *node);

/* Build an instance of a generated (slotted) class: object.__new__ and the slot descriptors. */
static PyObject *build_slots(Node *node, PyObject **values, Py_ssize_t n) {
    PyTypeObject *type = (PyTypeObject *)node->cls;
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (node->offsets[i] >= 0) {   /* what the descriptor's __set__ does, without the calls */
            PyObject **slot = (PyObject **)((char *)obj + node->offsets[i]);
            Py_XSETREF(*slot, Py_NewRef(values[i]));
            continue;
        }
        PyObject *setter = node->setters[i];
        if (Py_TYPE(setter)->tp_descr_set(setter, obj, values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    /* Like a tuple of atomic values (CPython untracks those too): an object holding only values the
     * garbage collector does not track cannot be part of a cycle, so the collector need not visit it.
     * Large caches of rows then cost full collections nothing. Only for frozen classes: no later
     * attribute setting can put a container in (compile_setters). */
    if (!node->untrack) return obj;
    for (Py_ssize_t i = 0; i < n; i++)   /* the type's flag first: ints, floats, str need no call */
        if (PyType_IS_GC(Py_TYPE(values[i])) && PyObject_GC_IsTracked(values[i])) return obj;
    if (PyObject_GC_IsTracked(obj)) PyObject_GC_UnTrack(obj);
    return obj;
}

/* An exception of a row or variant class: ProtocolError/KeyError mean "fall back", as in sats.py. */
static PyObject *fallback_or_raise(Parser *p) {
    if (PyErr_ExceptionMatches(p->state->catch)) { PyErr_Clear(); return FB; }
    return NULL;
}

static PyObject *parse_product(Parser *p, Node *node) {
    PyObject *small[16];
    PyObject **values = node->n <= 16 ? small : PyMem_Calloc(node->n, sizeof(PyObject *));
    PyObject *result = FB;
    Py_ssize_t got = 0;
    if (values == NULL) return PyErr_NoMemory();
    skip_ws(p);
    Py_UCS4 open = PEEK(p), close = open == '[' ? ']' : '}';
    if (open != '[' && open != '{') goto done;
    p->pos++;
    for (; got < node->n; got++) {
        if (got > 0 && !take(p, ',')) goto done;
        if (open == '{' && !take_key(p, &node->utf8[got])) goto done;
        PyObject *v = parse(p, node->fields[got]);
        if (v == NULL || v == FB) { result = v; goto done; }
        values[got] = v;
    }
    if (!take(p, close)) goto done;
    if (node->setters) {
        result = build_slots(node, values, node->n);
    } else {
        result = PyObject_Vectorcall(node->cls, values, node->n, NULL);
        if (result == NULL) result = fallback_or_raise(p);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) Py_DECREF(values[i]);
    if (values != small) PyMem_Free(values);
    return result;
}

static PyObject *parse_key(Parser *p, Node *node) {
    PyObject *key = NULL;
    PyObject *result = FB;
    Py_ssize_t found = 0;
    skip_ws(p);
    Py_UCS4 open = PEEK(p), close = open == '[' ? ']' : '}';
    if (open != '[' && open != '{') return FB;
    if (node->ncolumns > 1 && !(key = PyTuple_New(node->ncolumns))) return NULL;
    p->pos++;
    for (Py_ssize_t i = 0; i < node->n; i++) {
        if (i > 0 && !take(p, ',')) goto done;
        if (open == '{' && !take_key(p, &node->utf8[i])) goto done;
        if (node->fields[i]->op == OP_SKIP) {
            if (!skip_value(p, 0)) goto done;
            continue;
        }
        PyObject *v = parse(p, node->fields[i]);
        if (v == NULL || v == FB) { result = v; goto done; }
        for (Py_ssize_t c = 0; c < node->ncolumns; c++) {   /* columns come in key order */
            if (node->columns[c] != i) continue;
            if (key == NULL) key = v;
            else { Py_INCREF(v); PyTuple_SET_ITEM(key, c, v); }
            found++;
        }
        if (key != v) Py_DECREF(v);
    }
    if (take(p, close) && found == node->ncolumns) { result = key; key = NULL; }
done:
    Py_XDECREF(key);
    return result;
}

/* {"Name": payload} or [tag, payload], then the variant's maker on the payload. */
static PyObject *parse_variant(Parser *p, Node *node) {
    Py_ssize_t tag = -1, start, end;
    skip_ws(p);
    Py_UCS4 open = PEEK(p);
    p->pos++;
    if (open == '{') {
        if (!scan_plain_string(p, &start, &end) || !take(p, ':')) return FB;
        for (Py_ssize_t i = 0; i < node->n && tag < 0; i++)
            if (node->utf8[i].n == end - start && memcmp(p->s + start, node->utf8[i].s, (size_t)node->utf8[i].n) == 0)
                tag = i;
        if (tag < 0 && !node->object_only && end > start) {   /* no name: the tag in decimal digits */
            Py_ssize_t i = start, value = 0;
            for (; i < end && p->s[i] >= '0' && p->s[i] <= '9'; i++)
                if (value <= node->n) value = value * 10 + (p->s[i] - '0');   /* past n: out of range */
            if (i == end) tag = value;
        }
    } else if (open == '[' && !node->object_only) {
        skip_ws(p);
        Py_UCS4 c = PEEK(p);
        if (c == '0') {
            tag = 0;
            p->pos++;
        } else {
            for (tag = 0; (c = PEEK(p)) >= '0' && c <= '9' && tag <= node->n; p->pos++) tag = tag * 10 + (c - '0');
            if (tag == 0) tag = -1;
        }
        if (!take(p, ',')) return FB;
    }
    if (tag < 0 || tag >= node->n) return FB;
    PyObject *payload = parse(p, node->fields[tag]);
    if (payload == NULL || payload == FB) return payload;
    if (!take(p, open == '{' ? '}' : ']')) { Py_DECREF(payload); return FB; }
    Node *wrap = node->wraps[tag];
    if (wrap != NULL) {
        PyObject *sum[3] = {wrap->sum_name, payload, wrap->sum_tag};
        PyObject *obj = wrap->sum_name ? build_slots(wrap, sum, 3) : build_slots(wrap, &payload, wrap->nsetters);
        Py_DECREF(payload);
        return obj;
    }
    if (node->makers[tag] == Py_None) return payload;
    PyObject *value = PyObject_CallOneArg(node->makers[tag], payload);
    Py_DECREF(payload);
    return value ? value : fallback_or_raise(p);
}

/* An Option: null, [0, x] or {"some": x}, [1, []] or {"none": []} ({} for [] too). */
static PyObject *parse_option(Parser *p, Node *node) {
    Py_ssize_t start, end;
    int some;
    skip_ws(p);
    Py_UCS4 open = PEEK(p);
    if (open == 'n') return take_word(p, "null") ? Py_NewRef(Py_None) : FB;
    if (open == '[') {
        p->pos++;
        skip_ws(p);
        Py_UCS4 tag = PEEK(p);
        if (tag != '0' && tag != '1') return FB;
        p->pos++;
        if (!take(p, ',')) return FB;
        some = tag == '0';
    } else if (open == '{') {
        p->pos++;
        if (!scan_plain_string(p, &start, &end) || !take(p, ':') || end - start != 4) return FB;
        some = memcmp(p->s + start, "some", 4) == 0;
        if (!some && memcmp(p->s + start, "none", 4) != 0) return FB;
    } else {
        return FB;
    }
    PyObject *v;
    if (some) {
        v = parse(p, node->inner);
        if (v == NULL || v == FB) return v;
    } else {
        if (!take_unit(p)) return FB;
        v = Py_NewRef(Py_None);
    }
    if (!take(p, open == '[' ? ']' : '}')) { Py_DECREF(v); return FB; }
    return v;
}

/* An array, as a tuple: the items gather on the stack (on the heap past 16), then move in. */
static PyObject *parse_array(Parser *p, Node *node) {
    PyObject *small[16];
    PyObject **items = small, *v, *result = FB;
    Py_ssize_t n = 0, cap = 16;
    if (!take(p, '[')) return FB;
    if (!take(p, ']')) {
        do {
            if (n == cap) {
                PyObject **bigger = PyMem_Malloc(2 * cap * sizeof(PyObject *));
                if (bigger == NULL) { result = PyErr_NoMemory(); goto done; }
                memcpy(bigger, items, n * sizeof(PyObject *));
                if (items != small) PyMem_Free(items);
                items = bigger;
                cap *= 2;
            }
            v = parse(p, node->inner);
            if (v == NULL || v == FB) { result = v; goto done; }
            items[n++] = v;
        } while (take(p, ','));
        if (!take(p, ']')) goto done;
    }
    if ((result = PyTuple_New(n)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(result, i, items[i]);
    n = 0;                                   /* the tuple owns them now */
done:
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(items[i]);
    if (items != small) PyMem_Free(items);
    return result;
}

/* Bytes: a string of hex digit pairs, or an array of integers 0..255 (as bytes.fromhex and bytes()
 * take them; white space in the hex, and anything else, falls back). */
static PyObject *parse_bytes(Parser *p) {
    Py_ssize_t start, end;
    skip_ws(p);
    if (PEEK(p) == '"') {
        if (!scan_plain_string(p, &start, &end) || (end - start) % 2 != 0) return FB;
        PyObject *out = PyBytes_FromStringAndSize(NULL, (end - start) / 2);
        if (out == NULL) return NULL;
        char *b = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = start; i < end; i += 2) {
            int high = HEX[p->s[i]], low = HEX[p->s[i + 1]];
            if (high < 0 || low < 0) { Py_DECREF(out); return FB; }
            *b++ = (char)(high << 4 | low);
        }
        return out;
    }
    char stack[256];
    char *buf = stack;
    Py_ssize_t cap = sizeof stack, n = 0;
    PyObject *result = FB;
    if (!take(p, '[')) return FB;
    if (!take(p, ']')) {
        do {
            skip_ws(p);
            unsigned value = 0;
            for (start = p->pos; p->pos < p->len && p->pos - start < 4
                    && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; p->pos++)
                value = value * 10 + (unsigned)(p->s[p->pos] - '0');
            Py_ssize_t digits = p->pos - start;
            if (digits == 0 || digits > 3 || value > 255 || (digits > 1 && p->s[start] == '0')) goto done;
            if (reserve(&buf, &cap, n, 1, stack) < 0) { result = NULL; goto done; }
            buf[n++] = (char)value;
        } while (take(p, ','));
        if (!take(p, ']')) goto done;
    }
    result = PyBytes_FromStringAndSize(buf, n);
done:
    if (buf != stack) PyMem_Free(buf);
    return result;
}

static PyObject *parse(Parser *p, Node *node) {
    PyObject *v;
    switch (node->op) {
    case OP_INT:
        return parse_int(p, node);
    case OP_STR:
        return parse_string(p);
    case OP_BOOL:
        skip_ws(p);
        if (PEEK(p) == 't') return take_word(p, "true") ? Py_NewRef(Py_True) : FB;
        return take_word(p, "false") ? Py_NewRef(Py_False) : FB;
    case OP_F64:
    case OP_F32:
        return parse_float(p, node);
    case OP_SPECIAL: {                      /* [inner] or {"__key__": inner} */
        skip_ws(p);
        Py_UCS4 open = PEEK(p);
        if (open == '[') p->pos++;
        else if (!(open == '{' && (p->pos++, take_key(p, node->utf8)))) return FB;
        v = parse(p, node->inner);
        if (v == NULL || v == FB) return v;
        if (!take(p, open == '[' ? ']' : '}')) { Py_DECREF(v); return FB; }
        PyObject *obj = build_slots(node, &v, 1);
        Py_DECREF(v);
        return obj;
    }
    case OP_OPTION:                         /* null, [0, x], {"some": x}, [1, []], {"none": []} */
        return parse_option(p, node);
    case OP_PRODUCT:
        return parse_product(p, node);
    case OP_ARRAY:
        return parse_array(p, node);
    case OP_UNIT:
        return take_unit(p) ? PyTuple_New(0) : FB;
    case OP_BYTES:
        return parse_bytes(p);
    case OP_KEY:
        return parse_key(p, node);
    case OP_VARIANT:
        return parse_variant(p, node);
    default:                                /* OP_SKIP stands only in a key plan's fields */
        return FB;
    }
}

/* ---- the Python interface ------------------------------------------------------------------ */

/* A compiled plan. Its nodes hold references (classes, slot descriptors, makers), so it is a
 * garbage-collected object: a maker that refers back to the schema holding the plan makes a
 * cycle the collector must be able to see and break (tp_clear frees the nodes). */
typedef struct {
    PyObject_HEAD
    Node *root;                 /* NULL once cleared */
} PlanObject;

static int traverse_node(Node *node, visitproc visit, void *arg) {
    if (node == NULL) return 0;
    Py_VISIT(node->lo_obj);
    Py_VISIT(node->hi_obj);
    Py_VISIT(node->key);
    Py_VISIT(node->cls);
    Py_VISIT(node->sum_name);
    Py_VISIT(node->sum_tag);
    for (Py_ssize_t i = 0; i < node->nsetters; i++) Py_VISIT(node->setters[i]);
    for (Py_ssize_t i = 0; i < node->n; i++) {
        if (node->makers) Py_VISIT(node->makers[i]);
        if (node->names) Py_VISIT(node->names[i]);
        int err = node->fields ? traverse_node(node->fields[i], visit, arg) : 0;
        if (!err && node->wraps) err = traverse_node(node->wraps[i], visit, arg);
        if (err) return err;
    }
    return traverse_node(node->inner, visit, arg);
}

static int plan_traverse(PlanObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return traverse_node(self->root, visit, arg);
}

static int plan_clear(PlanObject *self) {
    Node *root = self->root;
    self->root = NULL;
    free_node(root);
    return 0;
}

static void plan_dealloc(PlanObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    plan_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyType_Slot plan_slots[] = {
    {Py_tp_dealloc, plan_dealloc},
    {Py_tp_traverse, plan_traverse},
    {Py_tp_clear, plan_clear},
    {Py_tp_doc, "A compiled row plan (see compile)."},
    {0, NULL},
};

static PyType_Spec plan_spec = {
    .name = "rx_spacetimedb.protocol._typedjson.Plan",
    .basicsize = sizeof(PlanObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = plan_slots,
};

static State *state_of(PyObject *mod) {
    return (State *)PyModule_GetState(mod);
}

/* The plan's root: a Plan of this module, not cleared; else NULL with TypeError. */
static Node *root_of(State *state, PyObject *plan, const char *usage) {
    if (!PyObject_TypeCheck(plan, state->plan_type)) {
        PyErr_Format(PyExc_TypeError, "%s: a Plan of compile() first", usage);
        return NULL;
    }
    Node *root = ((PlanObject *)plan)->root;
    if (root == NULL) PyErr_SetString(PyExc_ValueError, "the plan was cleared by the garbage collector");
    return root;
}

static PyObject *decode_one(State *state, Node *root, PyObject *text) {
    if (!PyUnicode_CheckExact(text)) return FB;
    Parser p = {NULL, 0, 0, 1, state};
    if (PyUnicode_IS_ASCII(text)) {
        p.s = PyUnicode_DATA(text);
        p.len = PyUnicode_GET_LENGTH(text);
    } else {
        p.ascii = 0;
        p.s = (const unsigned char *)PyUnicode_AsUTF8AndSize(text, &p.len);
        if (p.s == NULL) { PyErr_Clear(); return FB; }   /* lone surrogates: not UTF-8, not JSON */
    }
    PyObject *v = parse(&p, root);
    if (v == NULL || v == FB) return v;
    skip_ws(&p);
    if (p.pos != p.len) { Py_DECREF(v); return FB; }
    return v;
}

static PyObject *mod_compile(PyObject *mod, PyObject *plan) {
    State *state = state_of(mod);
    if (state->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call configure() first");
        return NULL;
    }
    Node *root = compile_node(plan, 0);
    if (root == NULL) return NULL;
    PlanObject *obj = PyObject_GC_New(PlanObject, state->plan_type);
    if (obj == NULL) { free_node(root); return NULL; }
    obj->root = root;
    PyObject_GC_Track(obj);
    return (PyObject *)obj;
}

static PyObject *mod_decode(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    State *state = state_of(mod);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(plan, text)");
        return NULL;
    }
    Node *root = root_of(state, args[0], "decode(plan, text)");
    if (root == NULL) return NULL;
    PyObject *v = decode_one(state, root, args[1]);
    return v == FB ? Py_NewRef(state->fallback) : v;
}

static PyObject *mod_decode_all(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    State *state = state_of(mod);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode_all(plan, texts, slow)");
        return NULL;
    }
    Node *root = root_of(state, args[0], "decode_all(plan, texts, slow)");
    if (root == NULL) return NULL;
    /* our own tuple: the Python code that runs meanwhile (slow, makers, row classes) may change
     * the caller's list, but cannot take a text from under us; the plan is held by our caller */
    PyObject *seq = PySequence_Tuple(args[1]);
    if (seq == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) { Py_DECREF(seq); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = PyTuple_GET_ITEM(seq, i);
        PyObject *v = decode_one(state, root, text);
        if (v == FB) v = PyObject_CallOneArg(args[2], text);
        if (v == NULL) { Py_DECREF(out); Py_DECREF(seq); return NULL; }
        PyList_SET_ITEM(out, i, v);
    }
    Py_DECREF(seq);
    return out;
}

/* decode_keyed(plan, texts, slow, key_of, columns): the rows by key in a dict, or None when a key
 * repeats (every row is still decoded, so a malformed one raises as in decode_all). A row the fast
 * path built is a generated class whose key columns sit at known offsets: read there; any other row
 * (a user class, one decoded by `slow`) gets key_of(row). */
static PyObject *mod_decode_keyed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    State *state = state_of(mod);
    if (nargs != 5 || !PyTuple_Check(args[4]) || PyTuple_GET_SIZE(args[4]) == 0) {
        PyErr_SetString(PyExc_TypeError, "decode_keyed(plan, texts, slow, key_of, columns)");
        return NULL;
    }
    Node *root = root_of(state, args[0], "decode_keyed(plan, texts, slow, key_of, columns)");
    if (root == NULL) return NULL;
    PyObject *columns = args[4];
    Py_ssize_t ncolumns = PyTuple_GET_SIZE(columns), offsets[8];
    int direct = root->op == OP_PRODUCT && root->setters != NULL && ncolumns <= 8;
    for (Py_ssize_t c = 0; c < ncolumns && direct; c++) {
        Py_ssize_t column = PyLong_AsSsize_t(PyTuple_GET_ITEM(columns, c));
        if (column == -1 && PyErr_Occurred()) return NULL;
        direct = column >= 0 && column < root->n && root->offsets[column] >= 0;
        if (direct) offsets[c] = root->offsets[column];
    }
    PyObject *seq = PySequence_Tuple(args[1]);   /* our own tuple, as in decode_all */
    if (seq == NULL) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) { Py_DECREF(seq); return NULL; }
    int repeated = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(seq); i++) {
        PyObject *text = PyTuple_GET_ITEM(seq, i), *key;
        PyObject *row = decode_one(state, root, text);
        int fast = row != FB && row != NULL;
        if (row == FB) row = PyObject_CallOneArg(args[2], text);
        if (row == NULL) goto error;
        if (repeated) {                      /* the answer is None: the rows left are only checked */
            Py_DECREF(row);
            continue;
        }
        if (fast && direct && ncolumns == 1) {
            key = Py_NewRef(*(PyObject **)((char *)row + offsets[0]));
        } else if (fast && direct) {
            if ((key = PyTuple_New(ncolumns)) != NULL)
                for (Py_ssize_t c = 0; c < ncolumns; c++)
                    PyTuple_SET_ITEM(key, c, Py_NewRef(*(PyObject **)((char *)row + offsets[c])));
        } else {
            key = PyObject_CallOneArg(args[3], row);
        }
        int seen = key == NULL ? -1 : PyDict_Contains(out, key);
        int err = seen == 0 ? PyDict_SetItem(out, key, row) : seen;
        Py_XDECREF(key);
        Py_DECREF(row);
        if (err < 0) goto error;
        repeated = seen == 1;                /* a key twice: the caller counts occurrences instead */
    }
    Py_DECREF(seq);
    if (repeated) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
error:
    Py_DECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *mod_configure(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    State *state = state_of(mod);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(fallback, catch)");
        return NULL;
    }
    Py_XSETREF(state->fallback, Py_NewRef(args[0]));
    Py_XSETREF(state->catch, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))mod_configure, METH_FASTCALL,
     "configure(fallback, catch): the fallback answer, and the exceptions of a class that mean fall back."},
    {"compile", mod_compile, METH_O, "compile(plan) -> Plan"},
    {"decode", (PyCFunction)(void (*)(void))mod_decode, METH_FASTCALL,
     "decode(plan, text) -> the value, or the fallback answer."},
    {"decode_all", (PyCFunction)(void (*)(void))mod_decode_all, METH_FASTCALL,
     "decode_all(plan, texts, slow) -> list: slow(text) for each text the fast path does not take."},
    {"decode_keyed", (PyCFunction)(void (*)(void))mod_decode_keyed, METH_FASTCALL,
     "decode_keyed(plan, texts, slow, key_of, columns) -> dict of the rows by key, or None if a key repeats."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *mod) {
    State *state = state_of(mod);
    state->plan_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &plan_spec, NULL);
    if (state->plan_type == NULL) return -1;
    return PyModule_AddObjectRef(mod, "Plan", (PyObject *)state->plan_type);
}

static int module_traverse(PyObject *mod, visitproc visit, void *arg) {
    State *state = state_of(mod);
    Py_VISIT(state->fallback);
    Py_VISIT(state->catch);
    Py_VISIT(state->plan_type);
    return 0;
}

static int module_clear(PyObject *mod) {
    State *state = state_of(mod);
    Py_CLEAR(state->fallback);
    Py_CLEAR(state->catch);
    Py_CLEAR(state->plan_type);
    return 0;
}

static void module_free(void *mod) {
    module_clear((PyObject *)mod);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_typedjson",
    .m_doc = "Type-directed JSON parser (optional accelerator).",
    .m_size = sizeof(State),
    .m_methods = methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__typedjson(void) {
    return PyModuleDef_Init(&module);
}
