/* The secret prefilter's scan on its own, outside Python: jr_suspect on the
 * two strings the C encoder scans for each record of the benchmarks' call
 * ("user u0000042 logged in" and the user id; names and constant values are
 * scanned once and cached).  Prints the best of 200 rounds of 10,000 records.
 *
 *   make -C _native prefilter-bench   (writes the default tokens, then runs this)
 *   ./prefilter_bench RING_PATH TOKENS_FILE   (tokens NUL-separated, as jr_set_prefilter takes them)
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "ring.h"

#define RECORDS 10000
#define ROUNDS 200

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s RING_PATH TOKENS_FILE\n", argv[0]);
        return 2;
    }
    static char tokens[8192];
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    size_t len = fread(tokens, 1, sizeof tokens, f);
    fclose(f);
    jr_ring *r;
    if (jr_open(argv[1], 1 << 16, 1, JR_POLICY_DROP, 0, &r) != JR_OK ||
        jr_set_prefilter(r, tokens, len) != JR_OK) {
        fprintf(stderr, "cannot open the ring or install the tokens\n");
        return 1;
    }
    static char msg[RECORDS][32], uid[RECORDS][16];
    static int msg_len[RECORDS], uid_len[RECORDS];
    for (int k = 0; k < RECORDS; k++) {
        msg_len[k] = snprintf(msg[k], sizeof msg[k], "user u%07d logged in", k);
        uid_len[k] = snprintf(uid[k], sizeof uid[k], "u%07d", k);
    }
    int flagged = 0;
    double best = 1e9;
    for (int round = 0; round < ROUNDS; round++) {
        double t0 = now();
        for (int k = 0; k < RECORDS; k++) {
            flagged += jr_suspect(r, (const uint8_t *)msg[k], (size_t)msg_len[k]);
            flagged += jr_suspect(r, (const uint8_t *)uid[k], (size_t)uid_len[k]);
        }
        double per = (now() - t0) / RECORDS;
        if (per < best)
            best = per;
    }
    printf("prefilter scan of a clean record: %.1f ns (best of %d rounds of %d; %d flagged)\n",
           best * 1e9, ROUNDS, RECORDS, flagged);
    jr_close(r);
    return flagged != 0;
}
