/*
 * count: the C twin of nfs-wasm/count. Forwards every packet and counts packets and
 * payload bytes in the node's state, in total (`count:packets`, `count:bytes`) and per
 * flow (`flow:<key>:packets`). Drops packets whose payload is larger than the
 * configured `max_payload` (default: no limit), counting them in `count:dropped`. A
 * refused add (a key that holds no integer) only loses that count.
 *
 * Configuration: lines of `max_payload = <n>` (the last one wins); blank lines are
 * skipped, any other line is an error. The same text gives the same NF, or the same
 * error message, as the Rust one (tests/all/c_guests.rs).
 */
#include "estate_guest.h"
#include "estate_text.h"

ESTATE_GUEST_EXPORTS()

/* The NF, as estate_nf_init built it. Lives as long as the instance. */
static struct {
    bool ready; /* estate_nf_init succeeded */
    bool limited;
    uint32_t max_payload; /* a usize on wasm32, as in the Rust NF */
} nf;

/* Parses the configuration into *out; false with the message in *err. */
static bool configure(estate_bytes config, bool *limited, uint32_t *max_payload, estate_buf *err) {
    estate_bytes rest = config, line, key, value;
    while (estate_next_line(&rest, &line)) {
        line = estate_trim(line);
        if (line.len == 0) continue;
        if (estate_split_once(line, '=', &key, &value) && estate_eq(estate_trim(key), ESTATE_LIT("max_payload"))) {
            uint64_t n;
            value = estate_trim(value);
            if (!estate_parse_u64(value, UINT32_MAX, &n)) {
                estate_put_cstr(err, "count: bad max_payload ");
                estate_put_debug(err, value);
                return false;
            }
            *limited = true;
            *max_payload = (uint32_t)n;
        } else {
            estate_put_cstr(err, "count: unknown configuration line ");
            estate_put_debug(err, line);
            return false;
        }
    }
    return true;
}

static int32_t init(estate_bytes config) {
    if (!estate_utf8_valid(config)) return estate_bad_input("configuration is not UTF-8");
    bool limited = false;
    uint32_t max_payload = 0;
    estate_buf err = {0};
    /* A configuration that fails leaves the NF as it was, as in the SDK. */
    if (!configure(config, &limited, &max_payload, &err)) return estate_answer(ESTATE_STATUS_ERROR, &err);
    nf.ready = true;
    nf.limited = limited;
    nf.max_payload = max_payload;
    return ESTATE_STATUS_OK;
}

ESTATE_EXPORT(ESTATE_EXPORT_NF_INIT)
int32_t estate_nf_init(const uint8_t *ptr, int32_t len) {
    int32_t status = init(estate_input(ptr, len));
    estate_bump_reset();
    return status;
}

static int32_t on_packet(estate_bytes record) {
    estate_packet p;
    if (!estate_decode_packet(record, &p)) return estate_bad_input("malformed packet record");
    if (!nf.ready) return estate_bad_input("estate_nf_init was not called");
    if (nf.limited && p.payload.len > nf.max_payload) {
        estate_counter_add(ESTATE_LIT("count:dropped"), 1, NULL);
        return ESTATE_VERDICT_DROP;
    }
    estate_counter_add(ESTATE_LIT("count:packets"), 1, NULL);
    estate_counter_add(ESTATE_LIT("count:bytes"), p.payload.len, NULL);
    estate_buf key = {0};
    estate_put_cstr(&key, "flow:");
    estate_put_bytes(&key, p.flow);
    estate_put_cstr(&key, ":packets");
    estate_counter_add(estate_buf_bytes(&key), 1, NULL);
    return ESTATE_VERDICT_FORWARD;
}

ESTATE_EXPORT(ESTATE_EXPORT_ON_PACKET)
int32_t estate_on_packet(const uint8_t *ptr, int32_t len) {
    int32_t verdict = on_packet(estate_input(ptr, len));
    estate_bump_reset();
    return verdict;
}

/* Nothing to bring: the per-flow counters are `flow:<key>:…` keys, which the host
 * brings itself. Checks its input as the SDK does. */
ESTATE_EXPORT(ESTATE_EXPORT_ON_FLOW_MOVED)
int32_t estate_on_flow_moved(const uint8_t *ptr, int32_t len, int32_t brought) {
    int32_t status = ESTATE_STATUS_OK;
    if (!estate_utf8_valid(estate_input(ptr, len)))
        status = estate_bad_input("flow key is not UTF-8");
    else if (brought != ESTATE_BROUGHT_COPIED && brought != ESTATE_BROUGHT_TAKEN && brought != ESTATE_BROUGHT_FAILED)
        status = estate_bad_input("unknown `brought` code");
    else if (!nf.ready)
        status = estate_bad_input("estate_nf_init was not called");
    estate_bump_reset();
    return status;
}
