/*
 * estate_guest.h: the estate guest ABI, version 3 (docs/abi.md), for guests in C.
 *
 * A guest is a freestanding wasm32 module (no libc, no WASI); this header is all it
 * needs: the ABI's numbers (those of guest-sdk/src/abi.rs; tests/all/c_guests.rs checks
 * each), the host calls of module "estate", the exports every guest has, a bump
 * allocator behind `estate_alloc`, and helpers that read and write the value, item and
 * packet encodings. estate_text.h adds text helpers (trim, lines, numbers, quoting)
 * that behave as Rust's. Build: see guest-c/README.md.
 *
 *     #include "estate_guest.h"
 *     ESTATE_GUEST_EXPORTS()  // estate_abi_version, estate_alloc (wasm-ld adds memory)
 *     ESTATE_EXPORT(ESTATE_EXPORT_REDUCE)
 *     int32_t estate_reduce(const uint8_t *ptr, int32_t len, int32_t phase) { ... }
 *
 * Memory: inputs arrive in buffers from `estate_alloc`; everything here allocates from
 * one bump heap and frees nothing. An entry point calls `estate_bump_reset()` when done
 * (after `estate_host_result`, which copies), so each call starts from an empty heap;
 * an NF that keeps heap data across packets calls `estate_bump_keep()` after making it.
 * Running out of memory traps, as in a Rust guest. An `estate_bytes` is a pointer and
 * a length (no NUL); the decoders check UTF-8 wherever the ABI says text, as Rust does.
 */
#ifndef ESTATE_GUEST_H
#define ESTATE_GUEST_H

#include <stdbool.h> /* compiler-provided (freestanding) headers only */
#include <stddef.h>
#include <stdint.h>

/* ---- ABI numbers (guest-sdk/src/abi.rs) ------------------------------------------ */

#define ESTATE_ABI_VERSION 3  /* estate_abi_version returns it; hosts refuse others */
#define ESTATE_ALLOC_FAILED 0 /* what estate_alloc returns when it cannot allocate */

/* Bits of estate_reducer_flags. */
#define ESTATE_FLAGS_NONE 0      /* also the flags of a reducer without the export */
#define ESTATE_FLAG_COMBINABLE 1 /* associative and commutative: may be pushed down */
#define ESTATE_FLAG_VALUES_ONLY 2 /* phase 0 reads values and versions only: keys, origins and writers may be empty */
#define ESTATE_FLAG_INTS 4        /* also takes all-integer items as their values alone (ESTATE_PHASE_INTS) */

/* Status codes of the entry points. */
#define ESTATE_STATUS_ITEM 0      /* estate_reduce/finish: an item was handed over */
#define ESTATE_STATUS_NONE 1      /* estate_reduce/finish: no item */
#define ESTATE_STATUS_ERROR 2     /* failed; UTF-8 message via estate_host_result */
#define ESTATE_STATUS_BAD_INPUT 3 /* input not decodable; message via result */
#define ESTATE_STATUS_OK 0        /* estate_nf_init / estate_on_flow_moved succeeded */

/* Answers of the host calls. */
#define ESTATE_STATE_GET_ABSENT 0 /* no such key; nothing staged */
#define ESTATE_STATE_GET_FOUND 1  /* the encoded value is staged */
#define ESTATE_STATE_SET_OK 0
#define ESTATE_STATE_SET_REFUSED 1 /* the message is staged */
#define ESTATE_STATE_DEL_ABSENT 0
#define ESTATE_STATE_DEL_DELETED 1
#define ESTATE_GLOBAL_NONE 0  /* nothing matched, or the reducer answered no item */
#define ESTATE_GLOBAL_ITEM 1  /* an encoded item is staged */
#define ESTATE_GLOBAL_ERROR 2 /* the message is staged */
#define ESTATE_COUNTER_TRY_ADD_OK 0      /* the new value is at out_ptr */
#define ESTATE_COUNTER_TRY_ADD_REFUSED 1 /* not an integer, or overflow; message staged */
#define ESTATE_TAKE_ERROR (-1)           /* take: else the number of keys brought */
#define ESTATE_REWRITE_OK 0    /* packet_rewrite: recorded for the packet being handled */
#define ESTATE_REWRITE_ERROR 1 /* outside estate_on_packet, or a port beyond 65535 */

/* Value tags (docs/abi.md, "Encoding"). */
#define ESTATE_TAG_INT 0   /* i64 */
#define ESTATE_TAG_FLOAT 1 /* f64 */
#define ESTATE_TAG_TEXT 2  /* u32 length + UTF-8 */
#define ESTATE_TAG_BYTES 3 /* u32 length + bytes */

/* The `phase` argument of estate_reduce. */
#define ESTATE_PHASE_ITEMS 0    /* items from the state stores */
#define ESTATE_PHASE_PARTIALS 1 /* partial results of this reducer, one per node */
#define ESTATE_PHASE_INTS 2     /* items' integer values alone, 8 bytes each (ESTATE_FLAG_INTS only) */

/* Answers of estate_on_packet. */
#define ESTATE_VERDICT_FORWARD 0
#define ESTATE_VERDICT_DROP 1
/* A batch (estate_on_packets): a verdict byte not written yet, the most packets, and
 * the scan count of a packet when the NF has no payload matcher. */
#define ESTATE_BATCH_PENDING 255
#define ESTATE_BATCH_MAX_PACKETS 32
#define ESTATE_BATCH_NOT_SCANNED 4294967295

/* The `brought` argument of estate_on_flow_moved. */
#define ESTATE_BROUGHT_COPIED 0 /* the other nodes keep their copies */
#define ESTATE_BROUGHT_TAKEN 1  /* every share of the flow's counters is here now */
#define ESTATE_BROUGHT_FAILED 2 /* could not be fetched: go on from what is here */

/* The direction byte of the packet record. */
#define ESTATE_DIRECTION_FORWARD 0 /* as the flow's first packet */
#define ESTATE_DIRECTION_REVERSE 1 /* the reply direction */

/* Bits of the packet record's tcp_flags byte (the TCP header's flags; 0 if not TCP). */
#define ESTATE_TCP_FIN 1   /* 0x01 */
#define ESTATE_TCP_SYN 2   /* 0x02 */
#define ESTATE_TCP_RST 4   /* 0x04 */
#define ESTATE_TCP_PSH 8   /* 0x08 */
#define ESTATE_TCP_ACK 16  /* 0x10 */
#define ESTATE_TCP_URG 32  /* 0x20 */
#define ESTATE_TCP_ECE 64  /* 0x40 */
#define ESTATE_TCP_CWR 128 /* 0x80 */

/* The host's multi-pattern matcher (matcher_new, matcher_count). Patterns are encoded
 * as a u32 count, then each as a u32 length and its bytes. */
#define ESTATE_MATCHER_ERROR (-1)       /* matcher_new failed; the message is staged */
#define ESTATE_MATCHER_NO_PREFILTER 1   /* flag: no skip-ahead prefilter (same matches) */
#define ESTATE_MATCHER_SCAN_PAYLOADS 2  /* flag: the host scans every payload of a batch with it */
#define ESTATE_MATCHER_MAX_PATTERNS 1024
#define ESTATE_MATCHER_MAX_PATTERN_BYTES 65536
#define ESTATE_MATCHER_MAX_MATCHERS 8
#define ESTATE_MATCHER_BYTES_PER_FUEL 8 /* fuel charged: one per call, one per 8 bytes */

/* ---- Export names, and how to export ---------------------------------------------- */

#define ESTATE_EXPORT_MEMORY "memory" /* exported by wasm-ld by default */
#define ESTATE_EXPORT_ABI_VERSION "estate_abi_version"
#define ESTATE_EXPORT_ALLOC "estate_alloc"
#define ESTATE_EXPORT_REDUCE "estate_reduce"               /* (ptr, len, phase) -> status */
#define ESTATE_EXPORT_REDUCER_FLAGS "estate_reducer_flags" /* () -> flags; optional */
#define ESTATE_EXPORT_FINISH "estate_finish"               /* (ptr, len) -> status; optional */
#define ESTATE_EXPORT_NF_INIT "estate_nf_init"             /* (ptr, len) -> status */
#define ESTATE_EXPORT_ON_PACKET "estate_on_packet"         /* (ptr, len) -> verdict */
#define ESTATE_EXPORT_ON_FLOW_MOVED "estate_on_flow_moved" /* (ptr, len, brought); optional */
#define ESTATE_EXPORT_PACKET_BUFFER "estate_packet_buffer" /* (len) -> ptr kept across packets; optional */
#define ESTATE_EXPORT_ON_PACKETS "estate_on_packets" /* (ptr, len, count) -> status; optional, see docs/abi.md */

/* Exports the function that follows under `name` (no linker flag needed). */
#define ESTATE_EXPORT(name) __attribute__((export_name(name), used))

/* ---- Host calls (module "estate"; docs/abi.md, "Host imports") -------------------- */

#define ESTATE_IMPORT_MODULE "estate"
#define ESTATE_IMPORT(name) __attribute__((import_module(ESTATE_IMPORT_MODULE), import_name(name)))

/* All guests: hand the call's output to the host (copied; the last call wins). */
ESTATE_IMPORT("result") void estate_host_result(const void *ptr, uint32_t len);
/* NFs: the length of the bytes the last staging call left, and a copy of them. */
ESTATE_IMPORT("staged_len") int32_t estate_host_staged_len(void);
ESTATE_IMPORT("staged_read") void estate_host_staged_read(void *ptr, uint32_t len);
/* NFs: the node's state (keys are UTF-8; values encoded, see estate_put_value). */
ESTATE_IMPORT("state_get") int32_t estate_host_state_get(const void *key, uint32_t key_len);
ESTATE_IMPORT("state_set")
int32_t estate_host_state_set(const void *key, uint32_t key_len, const void *val, uint32_t val_len);
ESTATE_IMPORT("state_del") int32_t estate_host_state_del(const void *key, uint32_t key_len);
ESTATE_IMPORT("counter_try_add")
int32_t estate_host_counter_try_add(const void *key, uint32_t key_len, int64_t delta, int64_t *out);
/* The form that traps on a refused add (ABI `import::LEGACY`); prefer counter_try_add. */
ESTATE_IMPORT("counter_add") int64_t estate_host_counter_add(const void *key, uint32_t key_len, int64_t delta);
/* NFs: a global read over the cluster (consistency `all` for global_all). */
ESTATE_IMPORT("global")
int32_t estate_host_global(const void *pat, uint32_t pat_len, const void *red, uint32_t red_len, int32_t timeout_ms);
ESTATE_IMPORT("global_all")
int32_t estate_host_global_all(const void *pat, uint32_t pat_len, const void *red, uint32_t red_len,
                               int32_t timeout_ms);
ESTATE_IMPORT("take") int64_t estate_host_take(const void *pat, uint32_t pat_len);
ESTATE_IMPORT("now_ms") int64_t estate_host_now_ms(void);
ESTATE_IMPORT("metric_add") void estate_host_metric_add(const void *name, uint32_t name_len, int64_t delta);
ESTATE_IMPORT("emit") void estate_host_emit(const void *ptr, uint32_t len);
/* A matcher over the encoded patterns (see ESTATE_MATCHER_*): its handle, or
 * ESTATE_MATCHER_ERROR with the message staged. */
ESTATE_IMPORT("matcher_new") int32_t estate_host_matcher_new(const void *ptr, uint32_t len, int32_t flags);
/* Non-overlapping, leftmost-first matches of the handle's patterns in ptr..ptr+len. */
ESTATE_IMPORT("matcher_count") int32_t estate_host_matcher_count(int32_t handle, const void *ptr, uint32_t len);
/* NFs, during estate_on_packet only: rewrite the packet being handled, its source to
 * (src_ip, src_port) and its destination to (dst_ip, dst_port); addresses big-endian
 * (see estate_ipv4), ports 0..=65535. ESTATE_REWRITE_OK, or ESTATE_REWRITE_ERROR. A
 * second call for the same packet replaces the first. */
ESTATE_IMPORT("packet_rewrite")
int32_t estate_host_packet_rewrite(uint32_t src_ip, int32_t src_port, uint32_t dst_ip, int32_t dst_port);

/* ---- The bump heap and the common exports ----------------------------------------- */

extern unsigned char __heap_base; /* defined by wasm-ld: the end of data and stack */

typedef struct {
    uintptr_t top;   /* next free byte (0: not set up yet) */
    uintptr_t floor; /* where estate_bump_reset goes back to */
} estate_heap_t;
extern estate_heap_t estate_heap; /* defined by ESTATE_GUEST_EXPORTS() */

/* `len` bytes, 8-aligned; NULL if memory cannot grow that far. Never freed one by one. */
static inline void *estate_bump_alloc(uint32_t len) {
    if (estate_heap.top == 0)
        estate_heap.top = estate_heap.floor = ((uintptr_t)&__heap_base + 7) & ~(uintptr_t)7;
    uint64_t start = estate_heap.top, end = start + len;
    if (end > 0xfffffff8u) return NULL;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536;
    if (end > have && __builtin_wasm_memory_grow(0, (size_t)((end - have + 65535) / 65536)) == (size_t)-1)
        return NULL;
    estate_heap.top = (uintptr_t)((end + 7) & ~(uint64_t)7);
    return (void *)(uintptr_t)start;
}

/* Frees everything allocated since the last estate_bump_keep (or since the start). */
static inline void estate_bump_reset(void) { estate_heap.top = estate_heap.floor; }

/* Keeps everything allocated so far for good: later resets go back to here. */
static inline void estate_bump_keep(void) { estate_heap.floor = estate_heap.top; }

/* Defines the heap and the exports every guest has: estate_abi_version, estate_alloc.
 * Write it once, at file scope, in one C file of the guest. */
#define ESTATE_GUEST_EXPORTS()                                                                   \
    estate_heap_t estate_heap;                                                                   \
    ESTATE_EXPORT(ESTATE_EXPORT_ABI_VERSION) int32_t estate_abi_version(void) {                 \
        return ESTATE_ABI_VERSION;                                                               \
    }                                                                                            \
    ESTATE_EXPORT(ESTATE_EXPORT_ALLOC) void *estate_alloc(int32_t len) {                         \
        return len < 0 ? (void *)ESTATE_ALLOC_FAILED : estate_bump_alloc((uint32_t)len);         \
    }

/* ---- Byte strings ------------------------------------------------------------------ */

typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} estate_bytes;

/* An estate_bytes of a string literal (without its NUL). */
#define ESTATE_LIT(s) ((estate_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

/* An entry point's input: empty for a null pointer or a length <= 0, as in the SDK. */
static inline estate_bytes estate_input(const void *ptr, int32_t len) {
    return (ptr && len > 0) ? (estate_bytes){(const uint8_t *)ptr, (uint32_t)len} : (estate_bytes){0, 0};
}

/* Whether `a` and `b` hold the same bytes. */
static inline bool estate_eq(estate_bytes a, estate_bytes b) {
    uint32_t i = 0;
    while (a.len == b.len && i < a.len && a.ptr[i] == b.ptr[i]) i++;
    return a.len == b.len && i == a.len;
}

/* Whether `s` is valid UTF-8, by the rules of Rust's `str::from_utf8` (no overlong
 * forms, no surrogates, nothing above U+10FFFF). */
static inline bool estate_utf8_valid(estate_bytes s) {
    const uint8_t *p = s.ptr;
    for (uint32_t i = 0, n = s.len; i < n;) {
        uint8_t c = p[i];
        uint32_t more;
        uint8_t lo = 0x80, hi = 0xbf; /* range of the first continuation byte */
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) more = 1;
        else if (c >= 0xe0 && c <= 0xef) { more = 2; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
        else if (c >= 0xf0 && c <= 0xf4) { more = 3; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
        else return false;
        if (n - i - 1 < more || p[i + 1] < lo || p[i + 1] > hi) return false;
        for (uint32_t k = 2; k <= more; k++)
            if ((p[i + k] & 0xc0) != 0x80) return false;
        i += more + 1;
    }
    return true;
}

/* ---- Building output: a growing byte buffer on the bump heap ----------------------- */

typedef struct {
    uint8_t *ptr;
    uint32_t len, cap;
} estate_buf; /* start with `estate_buf b = {0};` */

static inline estate_bytes estate_buf_bytes(const estate_buf *b) { return (estate_bytes){b->ptr, b->len}; }

/* Room for `more` bytes; traps when out of memory. Grows in place at the heap's top. */
static inline void estate_buf_reserve(estate_buf *b, uint32_t more) {
    if (more <= b->cap - b->len) return;
    uint64_t need = (uint64_t)b->len + more, cap = b->cap ? (uint64_t)b->cap * 2 : 64;
    while (cap < need) cap *= 2;
    if (cap > 0x7fffffffu) __builtin_trap();
    if (b->ptr && (uintptr_t)(b->ptr + b->cap) == estate_heap.top && estate_bump_alloc((uint32_t)(cap - b->cap))) {
        b->cap = (uint32_t)cap; /* the buffer was the last allocation: extended where it is */
        return;
    }
    uint8_t *p = (uint8_t *)estate_bump_alloc((uint32_t)cap);
    if (!p) __builtin_trap();
    for (uint32_t i = 0; i < b->len; i++) p[i] = b->ptr[i];
    b->ptr = p;
    b->cap = (uint32_t)cap;
}

static inline void estate_put_raw(estate_buf *b, const void *src, uint32_t len) {
    estate_buf_reserve(b, len);
    for (uint32_t i = 0; i < len; i++) b->ptr[b->len + i] = ((const uint8_t *)src)[i];
    b->len += len;
}
static inline void estate_put_bytes(estate_buf *b, estate_bytes s) { estate_put_raw(b, s.ptr, s.len); }
static inline void estate_put_cstr(estate_buf *b, const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    estate_put_raw(b, s, n);
}
static inline void estate_put_u8(estate_buf *b, uint8_t v) { estate_put_raw(b, &v, 1); }
/* Little-endian integers, as every number of the encoding. */
static inline void estate_put_le(estate_buf *b, uint64_t v, uint32_t size) {
    estate_buf_reserve(b, size);
    for (uint32_t i = 0; i < size; i++) b->ptr[b->len++] = (uint8_t)(v >> (8 * i));
}
static inline void estate_put_u16(estate_buf *b, uint16_t v) { estate_put_le(b, v, 2); }
static inline void estate_put_u32(estate_buf *b, uint32_t v) { estate_put_le(b, v, 4); }
static inline void estate_put_u64(estate_buf *b, uint64_t v) { estate_put_le(b, v, 8); }
/* A u32 length, then the bytes: how keys, text, bytes, origins and writers go. */
static inline void estate_put_lp(estate_buf *b, estate_bytes s) {
    estate_put_u32(b, s.len);
    estate_put_bytes(b, s);
}

/* Decimal text, for messages. */
static inline void estate_put_dec_u64(estate_buf *b, uint64_t v) {
    char d[20];
    int n = 0;
    do { d[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) estate_put_u8(b, (uint8_t)d[--n]);
}
static inline void estate_put_dec_i64(estate_buf *b, int64_t v) {
    if (v < 0) estate_put_u8(b, '-');
    estate_put_dec_u64(b, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

/* ---- Values, items and the packet record ------------------------------------------ */

typedef struct {
    uint8_t tag; /* ESTATE_TAG_* */
    union {
        int64_t i;      /* INT */
        double f;       /* FLOAT */
        estate_bytes b; /* TEXT (valid UTF-8) or BYTES */
    } u;
} estate_value;

typedef struct {
    estate_bytes key;    /* UTF-8 */
    estate_value value;
    estate_bytes origin; /* the node that holds the item */
    estate_bytes writer; /* the node that made its last write */
    uint64_t version;    /* hybrid logical clock timestamp of that write */
} estate_item;

/* Values of each type (text must be UTF-8: the host refuses anything else). */
static inline estate_value estate_value_int(int64_t v) { return (estate_value){ESTATE_TAG_INT, {.i = v}}; }
static inline estate_value estate_value_float(double v) { return (estate_value){ESTATE_TAG_FLOAT, {.f = v}}; }
static inline estate_value estate_value_text(estate_bytes s) { return (estate_value){ESTATE_TAG_TEXT, {.b = s}}; }
static inline estate_value estate_value_bytes(estate_bytes s) { return (estate_value){ESTATE_TAG_BYTES, {.b = s}}; }

/* An item that carries only a value (empty key, origin, writer; version 0): the usual
 * answer of a reducer. */
static inline estate_item estate_item_of(estate_value v) { return (estate_item){.value = v}; }

/* "int", "float", "text" or "bytes", as the SDK's `Value::type_name`. */
static inline const char *estate_type_name(uint8_t tag) {
    static const char *const names[] = {"int", "float", "text", "bytes"}; /* in tag order */
    return tag <= ESTATE_TAG_BYTES ? names[tag] : "unknown";
}

static inline void estate_put_value(estate_buf *b, const estate_value *v) {
    estate_put_u8(b, v->tag);
    if (v->tag == ESTATE_TAG_INT) {
        estate_put_u64(b, (uint64_t)v->u.i);
    } else if (v->tag == ESTATE_TAG_FLOAT) {
        union { double f; uint64_t u; } bits = {.f = v->u.f};
        estate_put_u64(b, bits.u);
    } else {
        estate_put_lp(b, v->u.b);
    }
}

/* One item; an item list is estate_put_u32(count), then the items. */
static inline void estate_put_item(estate_buf *b, const estate_item *it) {
    estate_put_lp(b, it->key);
    estate_put_value(b, &it->value);
    estate_put_lp(b, it->origin);
    estate_put_lp(b, it->writer);
    estate_put_u64(b, it->version);
}

/* The packet record an NF is handed (docs/abi.md, "Packet record"). */
typedef struct {
    uint8_t proto;     /* IP protocol number (6 TCP, 17 UDP, ...) */
    uint8_t direction; /* ESTATE_DIRECTION_* */
    bool moved;        /* the fabric marked the flow moved */
    uint8_t tcp_flags; /* ESTATE_TCP_* bits; 0 if not TCP */
    uint8_t src_ip[4];
    uint16_t src_port;
    uint8_t dst_ip[4];
    uint16_t dst_port;
    estate_bytes flow;    /* canonical key "proto:a.b.c.d:p-e.f.g.h:q", UTF-8 */
    estate_bytes payload; /* the transport payload */
} estate_packet;

static inline void estate_put_packet(estate_buf *b, const estate_packet *p) {
    estate_put_u8(b, p->proto);
    estate_put_u8(b, p->direction);
    estate_put_u8(b, p->moved ? 1 : 0);
    estate_put_u8(b, p->tcp_flags);
    estate_put_raw(b, p->src_ip, 4);
    estate_put_u16(b, p->src_port);
    estate_put_raw(b, p->dst_ip, 4);
    estate_put_u16(b, p->dst_port);
    estate_put_lp(b, p->flow);
    estate_put_lp(b, p->payload);
}

/* ---- Decoding: a bounds-checked reader with a sticky error ------------------------ */

/* Why a buffer could not be decoded (the SDK's `DecodeError`). */
enum {
    ESTATE_DECODE_OK = 0,
    ESTATE_DECODE_TRUNCATED, /* the buffer ended inside a field */
    ESTATE_DECODE_BAD_TAG,   /* unknown value tag (in `detail`) */
    ESTATE_DECODE_BAD_UTF8,  /* text that is not UTF-8 */
    ESTATE_DECODE_TRAILING,  /* `detail` bytes left over after the last field */
};

/* Every read returns false and leaves the reader alone once an error is set, so a
 * guest may read a whole record and check `error` once. */
typedef struct {
    const uint8_t *ptr;
    uint32_t left;
    int error;       /* ESTATE_DECODE_*; the first error wins */
    uint32_t detail; /* the bad tag, or the number of bytes left over */
} estate_reader;

static inline estate_reader estate_reader_new(estate_bytes in) { return (estate_reader){in.ptr, in.len, 0, 0}; }

static inline bool estate_fail(estate_reader *r, int error, uint32_t detail) {
    if (!r->error) { r->error = error; r->detail = detail; }
    return false;
}

static inline bool estate_read_span(estate_reader *r, uint32_t n, const uint8_t **out) {
    if (r->error) return false;
    if (n > r->left) return estate_fail(r, ESTATE_DECODE_TRUNCATED, 0);
    *out = r->ptr;
    r->ptr += n;
    r->left -= n;
    return true;
}
static inline bool estate_read_le(estate_reader *r, uint32_t size, uint64_t *out) {
    const uint8_t *p;
    if (!estate_read_span(r, size, &p)) return false;
    uint64_t v = 0;
    for (uint32_t i = 0; i < size; i++) v |= (uint64_t)p[i] << (8 * i);
    *out = v;
    return true;
}
static inline bool estate_read_u8(estate_reader *r, uint8_t *out) {
    const uint8_t *p;
    return estate_read_span(r, 1, &p) && (*out = *p, true);
}
static inline bool estate_read_u32(estate_reader *r, uint32_t *out) {
    uint64_t v;
    return estate_read_le(r, 4, &v) && (*out = (uint32_t)v, true);
}
/* A u32 length, then that many bytes (BYTES values, the payload). */
static inline bool estate_read_lp(estate_reader *r, estate_bytes *out) {
    uint32_t n;
    return estate_read_u32(r, &n) && estate_read_span(r, n, &out->ptr) && (out->len = n, true);
}
/* As estate_read_lp, and the bytes must be UTF-8 (keys, TEXT values, origins, ...). */
static inline bool estate_read_text(estate_reader *r, estate_bytes *out) {
    if (!estate_read_lp(r, out)) return false;
    return estate_utf8_valid(*out) || estate_fail(r, ESTATE_DECODE_BAD_UTF8, 0);
}

static inline bool estate_read_value(estate_reader *r, estate_value *v) {
    uint64_t bits;
    if (!estate_read_u8(r, &v->tag)) return false;
    switch (v->tag) {
    case ESTATE_TAG_INT: return estate_read_le(r, 8, &bits) && (v->u.i = (int64_t)bits, true);
    case ESTATE_TAG_FLOAT: {
        union { uint64_t u; double f; } c;
        return estate_read_le(r, 8, &c.u) && (v->u.f = c.f, true);
    }
    case ESTATE_TAG_TEXT: return estate_read_text(r, &v->u.b);
    case ESTATE_TAG_BYTES: return estate_read_lp(r, &v->u.b);
    default: return estate_fail(r, ESTATE_DECODE_BAD_TAG, v->tag);
    }
}

/* The item a node sends a VALUES_ONLY reducer most: an integer with an empty key, origin
 * and writer, read in one step (as the Rust SDK's decoder does); false, with nothing
 * read, for any other. */
static inline bool estate_read_values_only_int(estate_reader *r, estate_item *it) {
    enum { LEN = 4 + (1 + 8) + 4 + 4 + 8 };
    const uint8_t *p = r->ptr;
    if (r->error || r->left < LEN || p[4] != ESTATE_TAG_INT) return false;
    for (int i = 0; i < 4; i++)
        if (p[i] | p[13 + i] | p[17 + i]) return false;
    uint64_t value = 0, version = 0;
    for (int i = 0; i < 8; i++) {
        value |= (uint64_t)p[5 + i] << (8 * i);
        version |= (uint64_t)p[21 + i] << (8 * i);
    }
    *it = (estate_item){.key = {p, 0}, .value = estate_value_int((int64_t)value), .origin = {p, 0},
                        .writer = {p, 0}, .version = version};
    r->ptr += LEN;
    r->left -= LEN;
    return true;
}

static inline bool estate_read_item(estate_reader *r, estate_item *it) {
    if (estate_read_values_only_int(r, it)) return true;
    return estate_read_text(r, &it->key) && estate_read_value(r, &it->value) && estate_read_text(r, &it->origin) &&
           estate_read_text(r, &it->writer) && estate_read_le(r, 8, &it->version);
}

/* Fails unless every byte was read. */
static inline bool estate_reader_finish(estate_reader *r) {
    if (r->error) return false;
    return r->left == 0 || estate_fail(r, ESTATE_DECODE_TRAILING, r->left);
}

/* The smallest encoded item: empty key, empty text value, empty origin and writer. */
#define ESTATE_MIN_ITEM_LEN (4 + (1 + 4) + 4 + 4 + 8)

/* The count that starts an item list. A count larger than the rest could hold is
 * TRUNCATED at once, as the SDK decides it. */
static inline bool estate_read_items_count(estate_reader *r, uint32_t *count) {
    if (!estate_read_u32(r, count)) return false;
    return *count <= r->left / ESTATE_MIN_ITEM_LEN || estate_fail(r, ESTATE_DECODE_TRUNCATED, 0);
}

/* Checks that `in` holds exactly one item list, as the SDK's `decode_items`; on
 * success *count is its length. Then read the items without further checks:
 *     estate_reader r = estate_reader_new(in); estate_read_items_count(&r, &n);
 *     for (...) estate_read_item(&r, &item);                                          */
static inline bool estate_check_items(estate_bytes in, estate_reader *r, uint32_t *count) {
    *r = estate_reader_new(in);
    estate_item it;
    if (!estate_read_items_count(r, count)) return false;
    for (uint32_t i = 0; i < *count; i++)
        if (!estate_read_item(r, &it)) return false;
    return estate_reader_finish(r);
}

/* The number of values of an ESTATE_PHASE_INTS input: 8 bytes each (i64,
 * little-endian), no count before them. A length that is not a multiple of 8 is
 * TRAILING, as the SDK's `Ints::decode` decides it. Then read each with estate_int_at. */
static inline bool estate_read_ints_count(estate_reader *r, uint32_t *count) {
    if (r->error) return false;
    if (r->left % 8) return estate_fail(r, ESTATE_DECODE_TRAILING, r->left % 8);
    *count = r->left / 8;
    return true;
}
/* Value `i` of an ESTATE_PHASE_INTS input, `i` below its count: one load (Wasm memory
 * is little-endian). */
static inline int64_t estate_int_at(estate_bytes in, uint32_t i) {
    int64_t v;
    __builtin_memcpy(&v, in.ptr + (uint64_t)i * 8, 8);
    return v;
}

/* An address and a port of the packet record. */
static inline bool estate_read_endpoint(estate_reader *r, uint8_t ip[4], uint16_t *port) {
    const uint8_t *p;
    if (!estate_read_span(r, 6, &p)) return false;
    for (int i = 0; i < 4; i++) ip[i] = p[i];
    *port = (uint16_t)(p[4] | p[5] << 8);
    return true;
}

/* Decodes a buffer that holds exactly one packet record (direction must be a known
 * code, the flow UTF-8), as the SDK's `Packet::decode`. */
static inline bool estate_decode_packet(estate_bytes in, estate_packet *p) {
    estate_reader r = estate_reader_new(in);
    uint8_t moved = 0;
    bool ok = estate_read_u8(&r, &p->proto) && estate_read_u8(&r, &p->direction) &&
              (p->direction == ESTATE_DIRECTION_FORWARD || p->direction == ESTATE_DIRECTION_REVERSE) &&
              estate_read_u8(&r, &moved) && estate_read_u8(&r, &p->tcp_flags) &&
              estate_read_endpoint(&r, p->src_ip, &p->src_port) &&
              estate_read_endpoint(&r, p->dst_ip, &p->dst_port) && estate_read_text(&r, &p->flow) &&
              estate_read_lp(&r, &p->payload) && estate_reader_finish(&r);
    p->moved = moved != 0;
    return ok;
}

/* An address of the packet record as packet_rewrite takes it: a.b.c.d is
 * a << 24 | b << 16 | c << 8 | d. */
static inline uint32_t estate_ipv4(const uint8_t ip[4]) {
    return (uint32_t)ip[0] << 24 | (uint32_t)ip[1] << 16 | (uint32_t)ip[2] << 8 | (uint32_t)ip[3];
}

/* The reader's error in the words of the SDK's `DecodeError` (its Display). */
static inline void estate_put_decode_error(estate_buf *b, const estate_reader *r) {
    switch (r->error) {
    case ESTATE_DECODE_TRUNCATED: estate_put_cstr(b, "buffer ends inside a field"); break;
    case ESTATE_DECODE_BAD_TAG: estate_put_cstr(b, "unknown value tag "); estate_put_dec_u64(b, r->detail); break;
    case ESTATE_DECODE_BAD_UTF8: estate_put_cstr(b, "text is not UTF-8"); break;
    case ESTATE_DECODE_TRAILING: estate_put_dec_u64(b, r->detail); estate_put_cstr(b, " bytes left over"); break;
    default: estate_put_cstr(b, "no error"); break;
    }
}

/* ---- Answering the host ----------------------------------------------------------- */

/* Hands `msg` to the host and returns `status` (ERROR, BAD_INPUT, ...). */
static inline int32_t estate_answer(int32_t status, const estate_buf *msg) {
    estate_host_result(msg->ptr, msg->len);
    return status;
}

/* The SDK's answer to an input it cannot use: "bad input: <why>", BAD_INPUT. */
static inline int32_t estate_bad_input(const char *why) {
    estate_buf m = {0};
    estate_put_cstr(&m, "bad input: ");
    estate_put_cstr(&m, why);
    return estate_answer(ESTATE_STATUS_BAD_INPUT, &m);
}

/* Encodes `item`, hands it to the host and returns ITEM. */
static inline int32_t estate_answer_item(const estate_item *item) {
    estate_buf b = {0};
    estate_put_item(&b, item);
    return estate_answer(ESTATE_STATUS_ITEM, &b);
}

/* ---- NF helpers over the host calls ----------------------------------------------- */

/* The staged bytes (a value, an item or a message), copied to the bump heap. */
static inline estate_bytes estate_staged(void) {
    int32_t n = estate_host_staged_len();
    uint8_t *p = n > 0 ? (uint8_t *)estate_bump_alloc((uint32_t)n) : NULL;
    if (n > 0 && !p) __builtin_trap();
    estate_host_staged_read(p, n > 0 ? (uint32_t)n : 0);
    return (estate_bytes){p, n > 0 ? (uint32_t)n : 0};
}

/* counter_try_add on `key`: ESTATE_COUNTER_TRY_ADD_OK with *out the new value, or
 * REFUSED (message staged). `out` may be NULL. */
static inline int32_t estate_counter_add(estate_bytes key, int64_t delta, int64_t *out) {
    int64_t v = 0;
    int32_t code = estate_host_counter_try_add(key.ptr, key.len, delta, &v);
    if (out) *out = v;
    return code;
}

/* state_get, decoded: FOUND with *v (its text/bytes on the bump heap), ABSENT, or -1
 * if the host staged something that is not one value. */
static inline int32_t estate_get(estate_bytes key, estate_value *v) {
    int32_t code = estate_host_state_get(key.ptr, key.len);
    if (code != ESTATE_STATE_GET_FOUND) return code;
    estate_reader r = estate_reader_new(estate_staged());
    return estate_read_value(&r, v) && estate_reader_finish(&r) ? code : -1;
}

/* state_set with an encoded `v`: ESTATE_STATE_SET_OK or REFUSED (message staged). */
static inline int32_t estate_set(estate_bytes key, const estate_value *v) {
    estate_buf b = {0};
    estate_put_value(&b, v);
    return estate_host_state_set(key.ptr, key.len, b.ptr, b.len);
}

#endif /* ESTATE_GUEST_H */
