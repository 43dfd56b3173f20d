"""cffi builder for the janus ring (out-of-line API mode).

``setup.py`` lists this file in ``cffi_modules``, so installing the project
compiles it; ``python _native/build_ring.py`` builds it in place for hacking.
The only module that imports the result is ``janus_utils._ring``.
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffi = FFI()

# Copied from ring.h; cffi cannot read the preprocessor, so the constants and
# prototypes are restated here.  tests/test_ring.py checks the constants.
ffi.cdef(
    """
    #define JR_VERSION 1
    #define JR_HEADER_SIZE 4096
    #define JR_REC_HEADER 16
    #define JR_MIN_CAPACITY 4096

    #define JR_POLICY_BLOCK 0
    #define JR_POLICY_DROP 1
    #define JR_POLICY_TRY 2
    #define JR_POLICY_SPILL 3

    #define JR_OK 0
    #define JR_FULL -1
    #define JR_TOO_LARGE -2
    #define JR_ERRNO -3
    #define JR_BAD_MAGIC -4
    #define JR_BAD_VERSION -5
    #define JR_BAD_SIZE -6
    #define JR_CORRUPT -7
    #define JR_SUSPECT -8
    #define JR_INVALID -9
    #define JR_SIZE_MISMATCH -10
    #define JR_BUFFER_SMALL -11
    #define JR_INSECURE -12
    #define JR_MOVED -13
    #define JR_BUSY -14

    typedef struct jr_ring jr_ring;

    typedef struct jr_stats {
        uint64_t capacity;
        uint64_t head;
        uint64_t tail;
        uint64_t read_pos;
        uint64_t dropped;
        uint64_t torn;
        uint64_t high_water;
        uint64_t ring_id;
        uint64_t torn_bytes;
        uint64_t leader;
        uint64_t beat;
        uint64_t full_waits;
        uint64_t full_wait_ns;
        uint64_t full_wait_max_ns;
    } jr_stats;

    int jr_open(const char *path, uint64_t capacity, int create, int policy,
                int64_t block_timeout_ns, jr_ring **out);
    void jr_close(jr_ring *r);
    uint64_t jr_max_record(const jr_ring *r);

    /* producers: any number of threads and processes, concurrently */
    int jr_push(jr_ring *r, const uint8_t *data, size_t len);
    int jr_push_ex(jr_ring *r, const uint8_t *data, size_t len, int policy,
                   int64_t block_timeout_ns);
    int jr_set_policy(jr_ring *r, int policy, int64_t block_timeout_ns);
    void jr_count_drop(jr_ring *r);
    int jr_push_checked(jr_ring *r, const uint8_t *data, size_t len);
    int jr_set_prefilter(jr_ring *r, const char *tokens, size_t len);
    int jr_suspect(const jr_ring *r, const uint8_t *data, size_t len);
    int jr_suspect_key(const jr_ring *r, const uint8_t *data, size_t len);
    int jr_suspect_span(const jr_ring *r, const uint8_t *data, size_t len, size_t from,
                        size_t upto);
    size_t jr_quiet_prefix(const jr_ring *r, const uint8_t *data, size_t len);
    #define JR_DIGIT_REACH_ANY ...
    int jr_prefilter_digit_reach(const jr_ring *r);
    int jr_suspect_record(const jr_ring *r, const uint8_t *data, size_t len);
    int jr_push_record_checked(jr_ring *r, const uint8_t *data, size_t len);
    int jr_noop(jr_ring *r, const uint8_t *data, size_t len);

    /* the consumer: one thread of one process at a time */
    int64_t jr_read(jr_ring *r, uint8_t *out, size_t out_cap, size_t max_records,
                    size_t *used, uint64_t *next_pos);
    int jr_release(jr_ring *r, uint64_t upto);
    void jr_rewind(jr_ring *r);
    void jr_set_torn_timeout(jr_ring *r, int64_t ns);
    void jr_get_stats(const jr_ring *r, jr_stats *out);

    /* the consumer's election: any thread, any process */
    int jr_claim(jr_ring *r, uint64_t expected, uint64_t token);
    int jr_beat(jr_ring *r, uint64_t token);

    /* the consumer's wait between commits */
    #define JR_WAIT_TIMEOUT ...
    #define JR_WAIT_WOKEN ...
    #define JR_WAIT_FILLED ...
    int jr_wait_consumer(jr_ring *r, uint64_t min_used, int64_t timeout_ns);
    void jr_wake_consumer(jr_ring *r);
    int jr_wait_tail(jr_ring *r, uint64_t target, int64_t timeout_ns);

    /* test hook */
    int jr_debug_reserve_only(jr_ring *r, size_t len, int mode);
    int jr_debug_push_stalled(jr_ring *r, const uint8_t *data, size_t len, int64_t stall_ns);
    """
)

ffi.set_source(
    "janus_utils._ring_cffi",
    '#include "ring.h"',
    sources=[str(HERE / "ring.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
)

if __name__ == "__main__":
    # Compiles into build/ to check the C builds; `pip install -e .` is how
    # the module gets next to the package.
    ffi.compile(tmpdir=str(HERE.parent / "build" / "cffi"), verbose=True)
