/* A program written against the prototype's API (estatepp.h), in a 3-node cluster:
 * this process's node through es_*, two more through the explicit API (estate.h).
 * Usage: prototype_api PORT. Prints one line per check; exits 1 at the first failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "estate.h"
#include "estatepp.h"

static int failures = 0;

static void check_str(const char *what, const char *got, const char *want) {
    if (got == NULL || strcmp(got, want) != 0) {
        printf("FAIL %s: got \"%s\", want \"%s\" (last error: %s)\n", what, got ? got : "(null)", want,
               estate_last_error());
        failures++;
    } else {
        printf("ok %s = %s\n", what, got);
    }
}

static void check(const char *what, int cond) {
    printf("%s %s\n", cond ? "ok" : "FAIL", what);
    if (!cond) failures++;
}

static atomic_int served = 0;
static atomic_int served_c = 0;
static void on_global(unsigned long id, const char *key) {
    atomic_fetch_add(&served, 1);
    if (id > 0 && strcmp(key, "c") == 0) atomic_fetch_add(&served_c, 1);
}

/* A reduce function as the prototype's users wrote them: sums the data, checks the
 * items' origins and timestamps, and answers in a static buffer. */
static char reduce_buf[128];
static char *sum_and_origins(state_item_t *items, int n) {
    long sum = 0;
    int origins_ok = 1;
    for (int i = 0; i < n; i++) {
        sum += atol(items[i].data);
        if (items[i].node_identifier == NULL || items[i].node_identifier[0] == '\0' || items[i].timestamp == 0)
            origins_ok = 0;
    }
    snprintf(reduce_buf, sizeof reduce_buf, "n=%d sum=%ld origins=%s", n, sum, origins_ok ? "yes" : "no");
    return reduce_buf;
}

static char *returns_null(state_item_t *items, int n) {
    (void)items;
    (void)n;
    return NULL;
}

static void *writer(void *arg) {
    long t = (long)arg;
    char key[32];
    for (int j = 0; j < 100; j++) {
        snprintf(key, sizeof key, "thread:%ld:%d", t, j);
        es_set(key, "1");
    }
    return NULL;
}

static estate_node *start(const char *id, const char *seed) {
    estate_config config = {0};
    config.id = id;
    config.listen = "tcp://127.0.0.1:*";
    config.join = seed ? &seed : NULL;
    config.join_len = seed ? 1 : 0;
    estate_node *node = NULL;
    int status = estate_node_start(&config, &node);
    if (status != ESTATE_OK) {
        printf("FAIL start %s: %s: %s\n", id, estate_status_name(status), estate_last_error());
        exit(1);
    }
    return node;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int port = atoi(argv[1]);

    /* Before es_init: misuse answers, never aborts. */
    check_str("es_get before es_init", es_get("c"), "ES_NONE");
    check("the error says why", strstr(estate_last_error(), "es_init") != NULL);
    es_register_get_global_callback(on_global);

    estate_node *a = start("a", NULL);
    estate_node *b = start("b", estate_node_endpoint(a));
    /* Peers as the prototype lists them: ip:port, separated by ';' or spaces, this
     * node's own address among them. */
    char peers[256];
    snprintf(peers, sizeof peers, "%s; %s 127.0.0.1:%d", estate_node_endpoint(a) + 6, estate_node_endpoint(b) + 6,
             port);
    es_init_with_peers("127.0.0.1", port, peers);
    check("a sees 2 members", estate_node_wait_members(a, 2, 10000) == ESTATE_OK);
    check("b sees 2 members", estate_node_wait_members(b, 2, 10000) == ESTATE_OK);

    /* Versions are hybrid clocks of millisecond resolution: writes on different nodes in
     * one millisecond are ordered by their logical counters, not by when they were made.
     * The writes are a few milliseconds apart so that "latest" is the last one written. */
    es_set("c", "5");
    usleep(3000);
    estate_set(a, "c", "7");
    usleep(3000);
    estate_set(b, "c", "30");
    /* Each node's share of a load, under its own key (as the paper's NFs keep state). */
    es_set("share:me", "5");
    estate_set(a, "share:a", "7");
    estate_set(b, "share:b", "30");
    int64_t hits = 0;
    estate_add(a, "hits", 40, NULL);
    estate_add(a, "hits", 2, &hits);
    check("estate_add counts", hits == 42);
    check_str("es_get c", es_get("c"), "5");
    check_str("es_get missing", es_get("missing"), "ES_NONE");
    es_set("gone", "text value");
    check_str("es_get text", es_get("gone"), "text value");
    es_del("gone");
    check_str("es_get after es_del", es_get("gone"), "ES_NONE");

    check_str("global latest", es_get_global_predefined_reduce("c", 0), "30");
    check_str("global sum", es_get_global_predefined_reduce("c", 1), "42");
    check_str("global avg", es_get_global_predefined_reduce("c", 2), "14.0");
    check_str("global count", es_get_global_predefined_reduce("c", 5), "3");
    check_str("global sum, nothing matches", es_get_global_predefined_reduce("nothing:.*", 1), "ES_NONE");
    check_str("no predefined reducer 9", es_get_global_predefined_reduce("c", 9), "ES_NONE");
    check("the error names the reducer", strstr(estate_last_error(), "9") != NULL);
    check_str("global with a C reduce", es_get_global("c", sum_and_origins), "n=3 sum=42 origins=yes");
    check_str("a reduce answering NULL", es_get_global("c", returns_null), "ES_NONE");
    /* Each function's answer stays valid until that function is called again. */
    const char *got = es_get("c");
    const char *summed = es_get_global_predefined_reduce("c", 1);
    const char *reduced = es_get_global("c", sum_and_origins);
    check_str("es_get kept", got, "5");
    check_str("predefined kept", summed, "42");
    check_str("reduce kept", reduced, "n=3 sum=42 origins=yes");
    check_str("invalid pattern", es_get_global_predefined_reduce("(", 1), "ES_NONE");
    check("the error names the pattern", strlen(estate_last_error()) > 0);

    /* A pattern over flows, the paper's example. */
    es_set("flow:1:bytes", "100");
    estate_set(a, "flow:2:bytes", "250");
    estate_set(b, "flow:3:bytes", "50");
    check_str("global sum over flow:.*", es_get_global_predefined_reduce("flow:.*:bytes", 1), "400");

    /* Any thread may call es_*. */
    pthread_t threads[4];
    for (long t = 0; t < 4; t++) pthread_create(&threads[t], NULL, writer, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    check_str("4 threads x 100 writes", es_get_global_predefined_reduce("thread:.*", 5), "400");

    /* The explicit API reads the same cluster, and the compat node serves it. */
    char *sum = NULL;
    estate_read_info info = {0};
    int status = estate_get_global(a, "c", "sum", NULL, &sum, &info);
    check("explicit global sum ok", status == ESTATE_OK);
    check_str("explicit global sum", sum, "42");
    check("3 members answered", info.answered == 3 && info.missing == 0);
    estate_free_string(sum);

    /* The callback saw every read this node served: its own and a's. */
    for (int i = 0; i < 100 && atomic_load(&served_c) < 9; i++) usleep(10000);
    printf("served %d reads, %d of key c\n", atomic_load(&served), atomic_load(&served_c));
    check("the callback saw each read of c", atomic_load(&served_c) == 9);

    /* Graceful scale-in: es_close hands the node's state over, the sum stays. */
    es_close();
    check("a sees 1 member", estate_node_wait_members(a, 1, 1000) == ESTATE_OK);
    status = estate_get_global(a, "share:.*", "sum", NULL, &sum, &info);
    check_str("sum after es_close", status == ESTATE_OK ? sum : "(failed)", "42");
    check("2 members answered", info.answered == 2);
    estate_free_string(sum);
    check_str("es_get after es_close", es_get("c"), "ES_NONE");

    estate_node_stop(b);
    estate_node_stop(a);
    printf(failures ? "FAILED %d\n" : "all passed\n", failures);
    return failures ? 1 : 0;
}
