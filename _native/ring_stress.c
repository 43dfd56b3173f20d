/*
 * Multi-threaded correctness check of the ring, built with ThreadSanitizer by
 * `make -C _native tsan` (see the Makefile).  Kept apart from the benchmarks:
 * it proves ordering, not speed.
 *
 * P producer threads push R records each, tagged (producer, index), through a
 * small ring so it wraps thousands of times; one consumer checks that every
 * record arrives exactly once and in its producer's order.
 */
#include "ring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PRODUCERS 4
#define RECORDS 200000

static jr_ring *ring;

static void *producer(void *arg) {
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint8_t buf[64];
    for (uint32_t i = 0; i < RECORDS; i++) {
        memcpy(buf, &id, 4);
        memcpy(buf + 4, &i, 4);
        size_t len = 8 + (i % 48); /* vary sizes so records straddle the end */
        memset(buf + 8, (int)(i & 0xff), len - 8);
        if (jr_push(ring, buf, len) != JR_OK) {
            fprintf(stderr, "push failed\n");
            exit(2);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    char path[] = "/tmp/janus-ring-stress-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 2;
    close(fd);
    unlink(path);
    if (jr_open(path, 8192, 1, JR_POLICY_BLOCK, -1, &ring) != JR_OK) {
        perror("jr_open");
        return 2;
    }
    pthread_t t[PRODUCERS];
    for (uintptr_t p = 0; p < PRODUCERS; p++)
        pthread_create(&t[p], NULL, producer, (void *)p);

    uint32_t next[PRODUCERS] = {0};
    uint64_t total = 0, last_seq = 0;
    static uint8_t out[1 << 16];
    while (total < (uint64_t)PRODUCERS * RECORDS) {
        size_t used;
        uint64_t upto;
        int64_t n = jr_read(ring, out, sizeof out, 1024, &used, &upto);
        size_t off = 0;
        for (int64_t k = 0; k < n; k++) {
            uint64_t seq;
            uint32_t len, id, i;
            memcpy(&seq, out + off, 8);
            memcpy(&len, out + off + 8, 4);
            memcpy(&id, out + off + 16, 4);
            memcpy(&i, out + off + 20, 4);
            if ((total && seq <= last_seq) || id >= PRODUCERS || i != next[id] || len != 8 + (i % 48)) {
                fprintf(stderr, "FAIL: producer %u record %u (expected %u), seq %llu\n", id, i,
                        next[id], (unsigned long long)seq);
                return 1;
            }
            for (uint32_t b = 8; b < len; b++)
                if (out[off + 16 + b] != (uint8_t)(i & 0xff)) {
                    fprintf(stderr, "FAIL: payload of producer %u record %u damaged\n", id, i);
                    return 1;
                }
            last_seq = seq;
            next[id]++;
            total++;
            off += 16 + len;
        }
        jr_release(ring, upto);
    }
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(t[p], NULL);
    jr_stats st;
    jr_get_stats(ring, &st);
    printf("ok: %llu records from %d producers, exactly once and in order; "
           "%llu laps, dropped %llu, torn %llu\n",
           (unsigned long long)total, PRODUCERS, (unsigned long long)(st.head / st.capacity),
           (unsigned long long)st.dropped, (unsigned long long)st.torn);
    jr_close(ring);
    unlink(path);
    (void)argc;
    (void)argv;
    return (st.dropped || st.torn) ? 1 : 0;
}
