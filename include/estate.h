/*
 * estate.h: the explicit C API of libestate.
 *
 * A node is a handle (estate_node_start); every call returns a status code (0 is
 * ESTATE_OK) and leaves a message for estate_last_error() when it fails. Strings that
 * estate returns through an out parameter (char **) are the caller's: free each with
 * estate_free_string. Strings estate takes are borrowed for the call only.
 *
 * Values are text at this boundary: a value that reads as an integer (int64) is stored
 * as one, then one that reads as a float, else text; values come back in plain text
 * (integers in decimal, floats in their shortest round-trip form, text as is).
 *
 * Threads: every function may be called from any thread, concurrently, on the same
 * node; only estate_node_stop and a successful estate_node_leave end a handle, and no
 * other call on that handle may run or follow.
 *
 * Link with -lestate (libestate.so, built by `cargo build --release -p estate-c` into
 * target/release/). The prototype's API is in estatepp.h, in this same library.
 */
#ifndef ESTATE_H
#define ESTATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define ESTATE_OK 0
#define ESTATE_ERR_INVALID 1   /* an argument is NULL, not UTF-8, or out of range */
#define ESTATE_ERR_START 2     /* the node could not start (socket, id, peers) */
#define ESTATE_ERR_NOT_FOUND 3 /* no such key; no item matched; members not reached */
#define ESTATE_ERR_STORE 4     /* the store refused a write (size limits, a quota) */
#define ESTATE_ERR_GLOBAL 5    /* a global read failed (pattern, reducer, consistency) */
#define ESTATE_ERR_CLOSED 6    /* the node is not running */
#define ESTATE_ERR_INTERNAL 7  /* a bug in estate, caught at the boundary */
#define ESTATE_ERR_LEAVE 8     /* the state could not be handed over; the node stays */

typedef struct EstateNode estate_node;

typedef struct estate_config {
    const char *id;             /* node id; NULL: listen without "tcp://" */
    const char *listen;         /* "tcp://127.0.0.1:7001"; port "*" for any (then id is needed) */
    const char *const *join;    /* seed endpoints ("tcp://ip:port") ... */
    size_t join_len;            /* ... and how many */
    const char *control;        /* control endpoint for the estate command line; NULL: none */
    uint32_t heartbeat_ms;      /* 0: the default */
} estate_config;

typedef struct estate_read_options {
    uint32_t timeout_ms;        /* deadline; 0: 1000 */
    int32_t remote;             /* non-zero: push the reducer down (combinable reducers only) */
    int32_t all;                /* non-zero: fail unless every live member answered */
} estate_read_options;

typedef struct estate_read_info {
    size_t answered;            /* members that answered, this node included */
    size_t missing;             /* live members that did not answer in time */
} estate_read_info;

typedef struct estate_item {
    const char *key;
    const char *value;          /* as text */
    const char *origin;         /* id of the node holding the item */
    uint64_t version;           /* hybrid logical clock timestamp of its last write */
} estate_item;

/* A reduce function: the items (valid during the call only) in, the answer out as a
 * string the function keeps owning (estate copies it), or NULL for no answer. */
typedef char *(*estate_reduce_fn)(const estate_item *items, size_t n, void *user);
/* Told of a read the node served: its sequence number (from 1) and key pattern. */
typedef void (*estate_served_fn)(uint64_t seq, const char *pattern, void *user);

/* Starts a node; *out receives the handle. */
int estate_node_start(const estate_config *config, estate_node **out);
/* Stops a node without handing its state over (its items are gone; the members are
 * told it left). Frees the handle; returns once no callback of the node runs. */
void estate_node_stop(estate_node *node);
/* Graceful scale-in: hands every item to the live members (counters add up), leaves,
 * frees the handle. On failure (ESTATE_ERR_LEAVE) the node keeps its state and runs on. */
int estate_node_leave(estate_node *node, uint32_t timeout_ms);
/* The node's id and bound listen endpoint; valid while the node runs. */
const char *estate_node_id(const estate_node *node);
const char *estate_node_endpoint(const estate_node *node);
/* Waits until n other members are alive (ESTATE_ERR_NOT_FOUND after timeout_ms). */
int estate_node_wait_members(const estate_node *node, size_t n, uint32_t timeout_ms);

/* The local store: strictly consistent on this node. */
int estate_set(const estate_node *node, const char *key, const char *value);
int estate_get(const estate_node *node, const char *key, char **value);
int estate_del(const estate_node *node, const char *key, int *deleted);
/* Adds delta to the integer counter at key (missing: 0); *value (may be NULL) gets the
 * new value. Counters add up when state moves between nodes (leave, take), so a
 * cluster-wide sum survives scale-in; other values merge newest-wins. */
int estate_add(const estate_node *node, const char *key, int64_t delta, int64_t *value);

/* Reduces the items of every live member whose key matches pattern (a regular
 * expression over whole keys, or an exact key) with a reducer: latest, sum, avg, min,
 * max, count, list (a JSON array), or a Wasm reducer loaded in the node. *result gets
 * the answer; info (may be NULL) who answered. ESTATE_ERR_NOT_FOUND: nothing matched. */
int estate_get_global(const estate_node *node, const char *pattern, const char *reducer,
                      const estate_read_options *options, char **result, estate_read_info *info);
/* The same, reduced by a C function of the caller's, on the calling thread. */
int estate_get_global_with(const estate_node *node, const char *pattern,
                           const estate_read_options *options, estate_reduce_fn reduce,
                           void *user, char **result, estate_read_info *info);
/* Calls cb for every global read the node serves, its own included, on a thread of
 * estate's (so cb may call estate; user must be usable from that thread). NULL stops. */
int estate_on_served_read(const estate_node *node, estate_served_fn cb, void *user);

void estate_free_string(char *s);
/* The calling thread's last error message; valid until its next failing call. */
const char *estate_last_error(void);
/* A status code's name, e.g. "ESTATE_ERR_NOT_FOUND". */
const char *estate_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif /* ESTATE_H */
