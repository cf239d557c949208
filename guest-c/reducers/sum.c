/*
 * sum: the exact sum of integer values (combinable); the C twin of reducers-wasm/sum.
 * A float, text or bytes value is an error naming its key and origin; an overflow of
 * i64 is an error too. No items: no answer. A sum of partial sums is the sum, so both
 * phases reduce alike and the combined partial is the answer (finish is the identity).
 * Every answer and message is the one the Rust reducer gives (tests/all/c_guests.rs).
 */
#include "estate_guest.h"

ESTATE_GUEST_EXPORTS()

ESTATE_EXPORT(ESTATE_EXPORT_REDUCER_FLAGS)
/* It reads only values: pushed down, it gets no keys, origins or writers (all-integer
 * items as their values alone), and a call that fails is repeated on whole items, which
 * its errors name. */
int32_t estate_reducer_flags(void) {
    return ESTATE_FLAG_COMBINABLE | ESTATE_FLAG_VALUES_ONLY | ESTATE_FLAG_INTS;
}

/* "bad input: <decode error>", as the SDK answers an input it cannot decode. */
static int32_t undecodable(const estate_reader *r) {
    estate_buf m = {0};
    estate_put_cstr(&m, "bad input: ");
    estate_put_decode_error(&m, r);
    return estate_answer(ESTATE_STATUS_BAD_INPUT, &m);
}

/* Integer values alone: one load each. An overflow is reported again on whole items. */
static int32_t sum_ints(estate_bytes in) {
    estate_reader r = estate_reader_new(in);
    uint32_t count;
    if (!estate_read_ints_count(&r, &count)) return undecodable(&r);
    if (count == 0) return ESTATE_STATUS_NONE;
    int64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (__builtin_add_overflow(total, estate_int_at(in, i), &total)) {
            estate_buf m = {0};
            estate_put_cstr(&m, "sum: i64 overflow");
            return estate_answer(ESTATE_STATUS_ERROR, &m);
        }
    }
    estate_item answer = estate_item_of(estate_value_int(total));
    return estate_answer_item(&answer);
}

static int32_t sum(estate_bytes in, int32_t phase) {
    if (phase == ESTATE_PHASE_INTS) return sum_ints(in);
    if (phase != ESTATE_PHASE_ITEMS && phase != ESTATE_PHASE_PARTIALS) {
        estate_buf m = {0};
        estate_put_cstr(&m, "bad input: unknown phase ");
        estate_put_dec_i64(&m, phase);
        return estate_answer(ESTATE_STATUS_BAD_INPUT, &m);
    }
    /* One pass: every item is decoded, and summed until the first that fails. A
     * malformed list is still bad input even when an earlier item failed, as in the
     * SDK, which decodes the whole list first: the failure is reported only once the
     * list has been read to its end. */
    estate_reader r = estate_reader_new(in);
    uint32_t count;
    if (!estate_read_items_count(&r, &count)) return undecodable(&r);
    int64_t total = 0;
    estate_item item, failed = {0};
    bool not_integer = false, overflow = false;
    for (uint32_t i = 0; i < count; i++) {
        if (!estate_read_item(&r, &item)) return undecodable(&r);
        if (not_integer || overflow) continue;
        if (item.value.tag != ESTATE_TAG_INT) {
            not_integer = true;
            failed = item;
        } else if (__builtin_add_overflow(total, item.value.u.i, &total)) {
            overflow = true;
            failed = item;
        }
    }
    if (!estate_reader_finish(&r)) return undecodable(&r);
    if (count == 0) return ESTATE_STATUS_NONE;
    estate_buf m = {0};
    if (not_integer) {
        estate_put_cstr(&m, "sum: ");
        estate_put_bytes(&m, failed.key);
        estate_put_cstr(&m, " from ");
        estate_put_bytes(&m, failed.origin);
        estate_put_cstr(&m, " is ");
        estate_put_cstr(&m, estate_type_name(failed.value.tag));
        estate_put_cstr(&m, ", not an integer");
        return estate_answer(ESTATE_STATUS_ERROR, &m);
    }
    if (overflow) {
        estate_put_cstr(&m, "sum: i64 overflow at ");
        estate_put_bytes(&m, failed.key);
        return estate_answer(ESTATE_STATUS_ERROR, &m);
    }
    estate_item answer = estate_item_of(estate_value_int(total));
    return estate_answer_item(&answer);
}

ESTATE_EXPORT(ESTATE_EXPORT_REDUCE)
int32_t estate_reduce(const uint8_t *ptr, int32_t len, int32_t phase) {
    int32_t status = sum(estate_input(ptr, len), phase);
    estate_bump_reset(); /* the host has copied the output */
    return status;
}

/* The identity, after checking that the input is exactly one item; the answer is that
 * item re-encoded, as the SDK's default finish gives it. */
ESTATE_EXPORT(ESTATE_EXPORT_FINISH)
int32_t estate_finish(const uint8_t *ptr, int32_t len) {
    estate_reader r = estate_reader_new(estate_input(ptr, len));
    estate_item item;
    int32_t status = estate_read_item(&r, &item) && estate_reader_finish(&r) ? estate_answer_item(&item)
                                                                            : undecodable(&r);
    estate_bump_reset();
    return status;
}
