/*
 * estate_text.h: text helpers for C guests that behave as the Rust `str` methods they
 * are named after, so a C guest reads its configuration and words its messages as a
 * Rust guest does (guest-c/nfs/count.c and nfs-wasm/count give the same answers).
 * Needs estate_guest.h, which it includes. All text is UTF-8 already checked
 * (`estate_utf8_valid`); lines, trims and splits are views into it, nothing is copied.
 */
#ifndef ESTATE_TEXT_H
#define ESTATE_TEXT_H

#include "estate_guest.h"

/* The code point that starts at p[0] (valid UTF-8, at least one byte); *size its bytes. */
static inline uint32_t estate_utf8_at(const uint8_t *p, uint32_t *size) {
    if (p[0] < 0x80) { *size = 1; return p[0]; }
    if (p[0] < 0xe0) { *size = 2; return (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f); }
    uint32_t tail = (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
    if (p[0] < 0xf0) { *size = 3; return (uint32_t)(p[0] & 0x0f) << 12 | tail; }
    *size = 4;
    return (uint32_t)(p[0] & 0x07) << 18 | tail << 6 | (p[3] & 0x3f);
}

/* Unicode White_Space, the set Rust's `str::trim` removes. */
static inline bool estate_is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* `s` (valid UTF-8) without leading and trailing white space, as Rust's `str::trim`. */
static inline estate_bytes estate_trim(estate_bytes s) {
    uint32_t size;
    while (s.len && estate_is_space(estate_utf8_at(s.ptr, &size))) { s.ptr += size; s.len -= size; }
    while (s.len) {
        uint32_t start = s.len - 1; /* back to the first byte of the last code point */
        while (start && (s.ptr[start] & 0xc0) == 0x80) start--;
        if (!estate_is_space(estate_utf8_at(s.ptr + start, &size))) break;
        s.len = start;
    }
    return s;
}

/* The next line of *rest, as Rust's `str::lines`: split at "\n" or "\r\n", no empty
 * last line after a final "\n". False when no line is left. */
static inline bool estate_next_line(estate_bytes *rest, estate_bytes *line) {
    if (rest->len == 0) return false;
    uint32_t i = 0;
    while (i < rest->len && rest->ptr[i] != '\n') i++;
    *line = (estate_bytes){rest->ptr, i};
    if (i < rest->len) { /* drop the "\n", and a "\r" before it */
        if (i > 0 && rest->ptr[i - 1] == '\r') line->len--;
        i++;
    }
    rest->ptr += i;
    rest->len -= i;
    return true;
}

/* Splits `s` at the first `sep` (Rust's `split_once`); false if there is none. */
static inline bool estate_split_once(estate_bytes s, uint8_t sep, estate_bytes *head, estate_bytes *tail) {
    uint32_t i = 0;
    while (i < s.len && s.ptr[i] != sep) i++;
    if (i == s.len) return false;
    *head = (estate_bytes){s.ptr, i};
    *tail = (estate_bytes){s.ptr + i + 1, s.len - i - 1};
    return true;
}

/* An unsigned number at most `max`, as Rust's `parse` of an unsigned type: an optional
 * '+', then one or more ASCII digits, nothing else. */
static inline bool estate_parse_u64(estate_bytes s, uint64_t max, uint64_t *out) {
    if (s.len > 0 && s.ptr[0] == '+') { s.ptr++; s.len--; }
    if (s.len == 0) return false;
    uint64_t v = 0;
    for (uint32_t i = 0; i < s.len; i++) {
        uint8_t d = (uint8_t)(s.ptr[i] - '0');
        if (d > 9 || v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* `s` (valid UTF-8) quoted and escaped as Rust's `{:?}` prints a string, the form the
 * Rust guests use for text in messages. ASCII is escaped exactly as Rust does; other
 * characters are copied (Rust also escapes the few unprintable and combining ones). */
static inline void estate_put_debug(estate_buf *b, estate_bytes s) {
    static const char hex[] = "0123456789abcdef";
    estate_put_u8(b, '"');
    for (uint32_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        const char *esc = c == '\t' ? "\\t" : c == '\r' ? "\\r" : c == '\n' ? "\\n" : c == '\\' ? "\\\\"
                        : c == '"' ? "\\\"" : c == 0 ? "\\0" : NULL;
        if (esc) {
            estate_put_cstr(b, esc);
        } else if (c < 0x20 || c == 0x7f) { /* \u{1f}, \u{7f}: hex without leading zeros */
            char u[] = {hex[c >> 4], hex[c & 15], '}', 0};
            estate_put_cstr(b, "\\u{");
            estate_put_cstr(b, u + (c < 0x10));
        } else {
            estate_put_u8(b, c);
        }
    }
    estate_put_u8(b, '"');
}

#endif /* ESTATE_TEXT_H */
