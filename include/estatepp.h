/*
 * estatepp.h: the E-State prototype's C API (libestate), served by estate.
 *
 * Programs written against the prototype's header compile and link unchanged:
 *     cc prog.c -Iinclude -L target/release -lestate
 * One node per process. Peers are other nodes' "ip:port" listen addresses; a node
 * answers its own global reads too.
 *
 * Where estate differs from the prototype, deliberately:
 * - Returned strings (es_get, es_get_global*) belong to estate and stay valid until the
 *   same thread's next call of the same function. Never free them; copy what you keep.
 *   (The prototype returned pointers into freed or leaked memory.)
 * - Every function may be called from any thread; es_close waits for calls in flight.
 * - Misuse is not an assertion: a call without es_init, a NULL or non-UTF-8 argument, or
 *   a refused write does nothing (or answers "ES_NONE"); estate_last_error() (estate.h)
 *   says why.
 * - Global reads are best effort with a 1 s deadline: they answer from the members that
 *   replied in time and never hang on a dead peer. The explicit API (estate.h) reports
 *   who was missing.
 * - Values that read as integers or floats are stored as numbers (so sum and avg work
 *   across nodes) and come back in plain text: "7" for "007", "2.5" for "2.50".
 * - es_close hands this node's state to the other members before it stops (graceful
 *   scale-in); a node alone takes its state with it.
 */
#ifndef ESTATEPP_H_
#define ESTATEPP_H_

#ifdef __cplusplus
extern "C" {
#endif

struct state_item_struct {
    unsigned long timestamp;        /* the item's version (larger is newer) */
    const char *node_identifier;    /* "ip:port" of the node holding it */
    const char *data;               /* the value as text */
};
typedef struct state_item_struct state_item_t;

/* Starts this process's node on tcp://ip:port (its id is "ip:port"). */
extern void es_init(const char *ip, int port);
/* The same, joining through peers: "ip:port" entries separated by spaces or ';'.
 * Returns once a peer is reached, or after 5 s. */
extern void es_init_with_peers(const char *ip, int port, const char *peers);
/* Hands the state over, leaves, stops the node. */
extern void es_close(void);

extern void es_set(const char *k, const char *v);
/* The value, or "ES_NONE". */
extern const char *es_get(const char *k);
extern void es_del(const char *k);

/* Gathers every live member's items whose key matches k (a regular expression over
 * whole keys, or an exact key) and returns what reduce makes of them; "ES_NONE" if none
 * matched (reduce is then not called) or reduce returned NULL. The items are valid
 * during the call; estate copies the returned string and never frees it. */
extern const char *es_get_global(const char *k, char *(*reduce)(state_item_t *, int));
/* Built-in reducers: 0 latest, 1 sum, 2 avg (as the prototype); 3 min, 4 max, 5 count. */
extern const char *es_get_global_predefined_reduce(const char *k, int reduce_id);

/* cb(id, key) is called for every global read this node serves, its own included:
 * id counts from 1, key is the read's pattern. It runs on a thread of estate's and may
 * call es_* functions. May be registered before es_init; NULL unregisters. */
extern void es_register_get_global_callback(void (*cb_func)(unsigned long id, const char *key));

/* From estate.h: why the last call on this thread failed. */
extern const char *estate_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* ESTATEPP_H_ */
