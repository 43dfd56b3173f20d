/*
 * janus ring: a bounded multi-producer, single-consumer ring of variable-length
 * byte records that lives in a memory-mapped file (MAP_SHARED).
 *
 * Any number of threads and processes that open the same file may push at
 * once: a push reserves space with one compare-and-swap on the shared head,
 * copies the record and publishes it with a release store.  There is no mutex
 * and no system call on the push path (only a full ring under the "block"
 * policy sleeps).  One consumer at a time reads committed records in order and
 * releases them once it has stored them elsewhere.
 *
 * Every record's sequence number is its position: the free-running byte offset
 * of its header.  It only grows, so a consumer can store "committed up to N"
 * and resume exactly after it.
 *
 * Because the bytes live in the page cache, a record whose push returned
 * survives a SIGKILL of the process that pushed it (not a power loss).
 */
#ifndef JANUS_RING_H
#define JANUS_RING_H

#include <stddef.h>
#include <stdint.h>

/* Format of the file: a 4096-byte header page, then `capacity` data bytes. */
#define JR_MAGIC "JANUSRNG"
#define JR_VERSION 1
#define JR_HEADER_SIZE 4096
#define JR_ALIGN 16          /* every record starts on a 16-byte boundary */
#define JR_REC_HEADER 16     /* tag (8) + length (4) + flags (4) */
#define JR_MIN_CAPACITY 4096
#define JR_MAX_CAPACITY ((uint64_t)1 << 40)

/* Full-ring policies. */
#define JR_POLICY_BLOCK 0    /* wait with backoff until space frees (or timeout) */
#define JR_POLICY_DROP 1     /* return JR_FULL at once and count the drop */
#define JR_POLICY_TRY 2      /* jr_push_ex only: return JR_FULL at once, not counted
                                (the caller will push again another way) */
#define JR_POLICY_SPILL 3    /* as BLOCK, but a timeout returns JR_FULL uncounted: the
                                caller stores the record elsewhere or calls jr_count_drop */

/* Return codes: 0 is success, negative values are errors. */
#define JR_OK 0
#define JR_FULL -1           /* no room: dropped (counted) */
#define JR_TOO_LARGE -2      /* the record can never fit in this ring */
#define JR_ERRNO -3          /* a system call failed: errno says why */
#define JR_BAD_MAGIC -4      /* the file is not a janus ring */
#define JR_BAD_VERSION -5    /* a janus ring of another format version */
#define JR_BAD_SIZE -6       /* file size and header disagree, or size not a power of two */
#define JR_CORRUPT -7        /* header checksum or cursors are damaged */
#define JR_SUSPECT -8        /* jr_push_checked: the prefilter matched; nothing pushed */
#define JR_INVALID -9        /* an argument is out of range */
#define JR_SIZE_MISMATCH -10 /* the file exists with another capacity than asked */
#define JR_BUFFER_SMALL -11  /* jr_read: the next record does not fit the buffer */
#define JR_INSECURE -12      /* not a regular file of ours, or readable by others */
#define JR_MOVED -13         /* another consumer released past this handle: it is no
                                longer the ring's consumer (see jr_claim) */
#define JR_BUSY -14          /* jr_release: another consumer is releasing right now */

typedef struct jr_ring jr_ring;

typedef struct jr_stats {
    uint64_t capacity;
    uint64_t head;        /* end of the last reservation */
    uint64_t tail;        /* everything before this has been released */
    uint64_t read_pos;    /* this handle's read cursor */
    uint64_t dropped;     /* pushes refused because the ring was full */
    uint64_t torn;        /* records lost: reserved but never committed, or damaged,
                             and skipped (for damage an estimate, see torn_bytes) */
    uint64_t high_water;  /* most bytes ever in use at once */
    uint64_t ring_id;     /* random, chosen when the file was created */
    uint64_t torn_bytes;  /* bytes of the ring skipped with those records (exact) */
    uint64_t leader;      /* token of the consumer that last claimed the ring, 0 if none */
    uint64_t beat;        /* that consumer's heartbeat: advances while it runs */
    uint64_t full_waits;  /* pushes that found the ring full and waited for room */
    uint64_t full_wait_ns;     /* their time waiting, summed */
    uint64_t full_wait_max_ns; /* the longest of them */
} jr_stats;

/* --- Opening and closing: any thread, any process. ------------------------ */

/* Open the ring file at `path`, creating it (mode 0600) with `capacity` data
 * bytes if it does not exist and `create` is set.  capacity == 0 accepts an
 * existing file's capacity.  Creation is atomic (temp file + link), so several
 * processes may race to create the same ring. */
int jr_open(const char *path, uint64_t capacity, int create, int policy,
            int64_t block_timeout_ns, jr_ring **out);
void jr_close(jr_ring *r);

/* Maximum payload length one record may have in this ring. */
uint64_t jr_max_record(const jr_ring *r);

/* --- Producers: any number of threads and processes, concurrently. ------- */

/* Push one record with the ring's policy.  JR_OK once the record is in the
 * mapped file; JR_FULL if it was dropped; JR_TOO_LARGE if it can never fit.
 * A push that waits for room (JR_POLICY_BLOCK, JR_POLICY_SPILL) sleeps until
 * the consumer's next release wakes it (a futex in the shared header, Linux)
 * and is counted in jr_stats.full_waits; call it without holding locks the
 * consumer needs (from Python: cffi releases the GIL around the call). */
int jr_push(jr_ring *r, const uint8_t *data, size_t len);

/* Change the full-ring policy of this handle (pushes already waiting keep theirs). */
int jr_set_policy(jr_ring *r, int policy, int64_t block_timeout_ns);
/* Count one record as dropped (after JR_POLICY_SPILL, when storing it elsewhere failed). */
void jr_count_drop(jr_ring *r);

/* As jr_push, with an explicit policy and block timeout (< 0: no timeout). */
int jr_push_ex(jr_ring *r, const uint8_t *data, size_t len, int policy,
               int64_t block_timeout_ns);

/* As jr_push, but first run the secret prefilter over the bytes: if it
 * matches, push nothing and return JR_SUSPECT so the caller can redact. */
int jr_push_checked(jr_ring *r, const uint8_t *data, size_t len);

/* Set the prefilter: `tokens` holds ASCII tokens separated by NUL bytes,
 * `len` bytes in all; "^tok" must start a word, "tok$" end a key word.  Safe while
 * other threads push: the new rules replace the old ones at once. */
int jr_set_prefilter(jr_ring *r, const char *tokens, size_t len);

/* The prefilter on its own: 1 if `data` may hold a secret, else 0.
 * jr_suspect_key: the same for a key (a dict key, a header pair's name),
 * whose end also ends a key word. */
int jr_suspect(const jr_ring *r, const uint8_t *data, size_t len);
int jr_suspect_key(const jr_ring *r, const uint8_t *data, size_t len);

/* As jr_suspect, for what starts in data[from..upto) only: 1 if a match of
 * the rules starts there (read to its end, past upto if it goes on, and with
 * data[from - 1] as the byte before data[from]).  A text's verdict is
 * jr_suspect_span(0, u) or jr_suspect_span(u, len) for any u: so a suffix
 * that never changes (a template's end) is scanned once from its second
 * byte, and each call scans up to that byte only (speedups.c, put_plain).
 * The digits of a card number that crosses upto are all counted; whether a
 * token starting at or past upto, inside a run of digits begun before it, is
 * reported depends on whether the screen or the scan decides: callers rely
 * only on what starts in [from, upto). */
int jr_suspect_span(const jr_ring *r, const uint8_t *data, size_t len, size_t from, size_t upto);

/* How many of the first bytes of data[0..len) nothing can start at, whatever
 * text follows data[len - 1]: a text that begins with these bytes has the
 * verdict of jr_suspect_span from there (at most len - 1; 0 with no
 * prefilter set).  A template's text before its first argument is measured
 * once, and each call's scan starts past it (speedups.c, put_plain). */
size_t jr_quiet_prefix(const jr_ring *r, const uint8_t *data, size_t len);

/* How many digits in a row the prefilter's tokens can take in: the longest
 * run of digits inside a token, or JR_DIGIT_REACH_ANY when a token starts or
 * ends with a digit (or no prefilter is set).  When it is below the number
 * of digits of every integer written into a text, the text's verdict does
 * not depend on which digits they are: a token that met one of those digits
 * would have to hold all of them (it neither starts nor ends in them), and
 * rules (b) and (c) read a digit as a digit.  So the C encoder keeps a
 * verdict per template and count of digits (speedups.c, plain_plan). */
#define JR_DIGIT_REACH_ANY 255
int jr_prefilter_digit_reach(const jr_ring *r);

/* The prefilter over a record as the logger encodes it (marshal version 2):
 * jr_suspect on each string (jr_suspect_key on keys), jr_card_number on each
 * int below the top, and 1 for bytes it does not read.  jr_push_record_checked: as jr_push_checked
 * with this test. */
int jr_suspect_record(const jr_ring *r, const uint8_t *data, size_t len);
int jr_push_record_checked(jr_ring *r, const uint8_t *data, size_t len);

/* An int field that reads as a card number: 13-19 digits, the first 2-6 (an
 * issuer), Luhn-valid; janus_utils._redact.is_card_number is the same rule.
 * Inline so that the C encoder (speedups.c) applies it too. */
static inline int jr_card_number(uint64_t v) {
    if (v < 1000000000000ULL || v >= 10000000000000000000ULL)
        return 0;
    unsigned sum = 0, digit = 0, odd = 0;
    for (; v; v /= 10, odd ^= 1) {
        digit = (unsigned)(v % 10);
        unsigned d = odd ? 2 * digit : digit;
        sum += d > 9 ? d - 9 : d;
    }
    /* digit is now the leading one */
    return digit >= 2 && digit <= 6 && sum % 10 == 0;
}

/* An empty call with jr_push's argument shape: the floor of a call from Python. */
int jr_noop(jr_ring *r, const uint8_t *data, size_t len);

/* --- The consumer: one thread of one process at a time. ------------------ *
 *
 * "One at a time" is the caller's election (a file lock, see janus_utils'
 * flusher) and can fail: a lock file deleted, or an elected consumer stopped
 * (SIGSTOP) and replaced, then resumed.  The ring stays whole even then:
 * jr_release is exclusive (an OFD lock; JR_BUSY to the second caller) and
 * never moves the tail backwards, and a consumer that another one has
 * released past gets JR_MOVED from jr_read and jr_release.  Which consumer's
 * records count is decided where they are stored (janus_utils fences its
 * commits on the stored position); the ring only has to stay consistent. */

/* Copy committed records in order into `out` as [u64 seq][u32 len][u32 0]
 * [payload] each, packed.  Returns the number of records copied (0 if none is
 * ready) and sets *used and *next_pos (the position after the last record
 * read, to pass to jr_release once they are stored).  A record reserved but
 * not committed within the torn timeout is skipped and counted as torn once
 * its producer's process is gone; a live producer's record is waited for.
 *
 * A reservation its producer never claimed within the torn timeout (stopped
 * or killed right after reserving) is taken from it: the producer, if it
 * resumes, finds it skipped and pushes again.  So nothing is ever skipped
 * that a producer may still write into (ring.c explains the tags).
 *
 * "Gone" is decided by a lock, not a pid: every process that opens the ring
 * holds an OFD lock on one byte of it (its slot, written into each record it
 * reserves), which the kernel drops when the process exits.  So a zombie is
 * gone, a stopped process is not, and producers in other PID namespaces are
 * judged right.  Records without a slot (written where OFD locks are missing,
 * or by an older version) fall back to the pid: kill(pid, 0) and not a zombie.
 * JR_MOVED: another consumer has released past this handle's position. */
int64_t jr_read(jr_ring *r, uint8_t *out, size_t out_cap, size_t max_records,
                size_t *used, uint64_t *next_pos);

/* Release everything before `upto` (a position jr_read returned, or one stored
 * with committed records): its space is zeroed and given back to producers.
 * JR_MOVED if the tail is already past `upto` (another consumer released it);
 * JR_BUSY if another consumer is inside jr_release (try again later). */
int jr_release(jr_ring *r, uint64_t upto);

/* Move this handle's read cursor back to the tail, to read unreleased records
 * again (after a failed store). */
void jr_rewind(jr_ring *r);

/* How long an uncommitted record may block the consumer before it is skipped. */
void jr_set_torn_timeout(jr_ring *r, int64_t ns);

void jr_get_stats(const jr_ring *r, jr_stats *out);

/* --- The consumer's election: any thread, any process. ------------------- *
 *
 * The ring holds the token of the consumer that claimed it last and a
 * heartbeat counter that consumer advances while it runs, so that waiting
 * consumers can tell a stopped or hung one from a working one without a
 * clock shared between processes. */

/* Make `token` the ring's consumer if the current one is `expected` (0: none)
 * and advance the heartbeat.  1 if it did, 0 if another consumer got there. */
int jr_claim(jr_ring *r, uint64_t expected, uint64_t token);

/* Advance the heartbeat if `token` is still the ring's consumer: 1, else 0
 * (another consumer has claimed the ring: step down). */
int jr_beat(jr_ring *r, uint64_t token);

/* --- The consumer's wait between commits. -------------------------------- */

#define JR_WAIT_TIMEOUT 0 /* timeout_ns passed */
#define JR_WAIT_WOKEN 1   /* jr_wake_consumer() was called */
#define JR_WAIT_FILLED 2  /* the ring holds min_used bytes or more */

/* Wait until jr_wake_consumer() is called (now, or since the last wait that
 * returned JR_WAIT_WOKEN), the ring holds `min_used` bytes, or `timeout_ns`
 * passes.  Holds no lock of the caller's (through cffi, not the GIL), so a
 * consumer thread waiting for its next commit does not take the
 * application's GIL to look at the ring.  One thread of the handle waits;
 * any thread of any process sharing the ring may wake it (the wake word is
 * in the ring's header): flush() anywhere makes the consumer commit now. */
int jr_wait_consumer(jr_ring *r, uint64_t min_used, int64_t timeout_ns);
void jr_wake_consumer(jr_ring *r);

/* Wait until the tail reaches `target` (every record up to that byte
 * position released) or `timeout_ns` pass: 1 if it did, 0 if not.  Woken
 * by the release that moves the tail (flush()'s wait). */
int jr_wait_tail(jr_ring *r, uint64_t target, int64_t timeout_ns);

/* --- Test hook. ---------------------------------------------------------- */

/* Reserve room for a `len`-byte record and never commit it, as a producer
 * killed between reserve and commit would.  mode 0: nothing written (killed
 * right after the reservation); 3: claimed only; 1: the RESV header written;
 * 2: the same, naming the producer by pid as records without a liveness slot
 * do. */
int jr_debug_reserve_only(jr_ring *r, size_t len, int mode);

/* jr_push (block policy, no timeout) that sleeps `stall_ns` between its
 * reservation and its first write, as a producer stopped there would. */
int jr_debug_push_stalled(jr_ring *r, const uint8_t *data, size_t len, int64_t stall_ns);

#endif
