/*
 * janus ring: see ring.h for the contract.  This file explains the "how".
 *
 * Layout of the file:
 *
 *   [0, 4096)            struct jr_shared: format fields, then the producers'
 *                        cursor, the consumer's cursor and the counters, each
 *                        on its own cache line so pushes and reads do not
 *                        bounce one line between cores.
 *   [4096, 4096 + cap)   the data area, `cap` a power of two.
 *
 * Past the end of the file, byte-range locks (never data) say which processes
 * are alive (see register_live) and who is releasing (see jr_release).
 *
 * Positions (head, tail, record sequence numbers) are free-running 64-bit byte
 * counts, masked by cap - 1 to find the byte in the data area.  They never
 * wrap in practice: at 10 GB/s of logs, 2^64 bytes take 58 years.
 *
 * A record is a 16-byte header followed by the payload, padded to 16 bytes:
 *
 *   tag    u64  its state, bound to its own position pos (below)
 *   len    u32  payload length
 *   flags  u32  who wrote it (see FLAG_SLOT); FLAG_PAD for the filler that
 *               skips the end of the data area
 *
 * The tag at a record's position goes through these values:
 *
 *   pos ^ TAG_FREE      released space, ready for the reservation at pos
 *                       (0 in files from before free tags: see claim())
 *   CLAIM(pos, owner)   a producer claimed it (compare-and-swap from FREE);
 *                       owner is its flags: the record's length is not known yet
 *   pos ^ TAG_RESV      length and flags written, payload being copied
 *   pos ^ TAG_DONE      committed
 *   pos ^ TAG_SKIP      the consumer gave up on an unclaimed reservation
 *                       (compare-and-swap from FREE): nobody writes there
 *
 * Binding every value to its position means a header left over from an
 * earlier lap (at pos - k*cap) never looks valid at pos.  Releasing space
 * rewrites every 16-byte unit of it, as the FREE header of the position it
 * will have in the next lap, so no payload byte of an old lap can pass for a
 * header either.
 *
 * Why claim, and why FREE is bound to a lap: a producer stopped (SIGSTOP,
 * starved) between its reservation and its first write leaves a reservation
 * nobody can attribute.  The consumer may give up on it after the torn
 * timeout, but only by turning FREE into SKIP with a compare-and-swap; the
 * producer's own claim is the other compare-and-swap on the same word, so
 * exactly one of them wins.  A producer that loses reserves again (its record
 * is not lost), and one that resumes after the space was released and reused
 * finds the next lap's FREE value, a claim or payload there, never its own
 * FREE value, and loses too.  So the consumer never skips space a producer
 * may still write into.
 *
 * A record never straddles the end of the data area: a producer whose record
 * would, reserves the rest of the area as a pad record plus its own record at
 * offset 0, in the same compare-and-swap.  Records are limited to cap / 2 so
 * that an empty ring always has room (see jr_max_record).
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#include <unistd.h>

#define TAG_RESV 0x52455356a5c3e1f7ULL /* "RESV" + noise */
#define TAG_DONE 0x444f4e455a3c1e0bULL /* "DONE" + noise */
#define TAG_FREE 0x46524545c3a5f17eULL /* "FREE" + noise */
#define TAG_SKIP 0x534b4950e1f7a5c3ULL /* "SKIP" + noise */
/* CLAIM(pos, owner): the high half bound to pos, the low half the owner's
 * flags (never 0).  The high halves of the five tags differ, so no two
 * states of one position can be mistaken for each other. */
#define TAG_CLAIM 0x434c4d5000000000ULL /* "CLMP" */
#define CLAIM_HIGH 0xffffffff00000000ULL
/* sh->features: this file's free space carries FREE tags (created so). */
#define FEATURE_FREE_TAGS 1u
#define FLAG_PAD 1u
/* A record's flags name its producer, so the consumer can tell a producer
 * that died mid-push from one that is only slow:
 *   FLAG_SLOT | slot << 1   the producer's liveness slot (see register_live)
 *   pid << 1                its pid, where it has no slot (pids are < 2^22,
 *                           so bit 31 is clear: older files read the same)
 * and FLAG_PAD marks the filler record that skips the end of the data area. */
#define FLAG_PID_SHIFT 1
#define FLAG_SLOT 0x80000000u
#define CACHE_LINE 64

/* Liveness slots: process k holds an OFD write lock on byte LIVE_BASE + slot
 * of the ring file for as long as it has the ring open.  The bytes lie past
 * the end of any ring file (JR_HEADER_SIZE + JR_MAX_CAPACITY < 2^41): locks
 * there take no space.  RELEASE_LOCK is the byte jr_release locks. */
#define LIVE_BASE ((off_t)1 << 41)
#define LIVE_SLOTS (1u << 22)
#define LIVE_PROBES 64
#define RELEASE_LOCK (LIVE_BASE - 1)

struct jr_shared {
    /* format, written once at creation */
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint64_t ring_id;
    uint64_t created_ns;
    uint32_t check; /* FNV-1a of the fields above */
    uint32_t _pad0;
    char _line0[CACHE_LINE - 48];
    /* producers: reservation cursor */
    uint64_t head;
    char _line1[CACHE_LINE - 8];
    /* consumer: release cursor */
    uint64_t tail;
    char _line2[CACHE_LINE - 8];
    /* counters, written rarely */
    uint64_t dropped;
    uint64_t torn;       /* records lost: see count_lost */
    uint64_t high_water;
    uint64_t torn_bytes; /* bytes skipped; zero in files made before it existed */
    char _line3[CACHE_LINE - 32];
    /* the consumer's election (jr_claim, jr_beat); zero in a fresh file, and
     * in files from before these fields, which read as "no consumer" */
    uint64_t leader;
    uint64_t beat;
    uint32_t features; /* FEATURE_*, set at creation */
    uint32_t wake_seq; /* futex word: moved by jr_wake_consumer, in any process
                          (zero in files from before it) */
    char _line4[CACHE_LINE - 24];
    /* producers waiting for room (reserve_wait, wait_for_room); zero in a
     * fresh file and in files from before these fields */
    uint32_t room_seq;     /* futex word: moved by a release that finds a waiter */
    uint32_t room_waiters; /* producers about to sleep or asleep on room_seq, any
                              process.  One killed asleep stays counted: the
                              consumer then makes one futex call per release. */
    uint64_t full_waits;   /* pushes that found the ring full and waited for room */
    uint64_t full_wait_ns; /* their time waiting, summed */
    uint64_t full_wait_max_ns; /* the longest of them */
    char _line5[CACHE_LINE - 32];
};

_Static_assert(sizeof(struct jr_shared) == 6 * CACHE_LINE, "shared header layout");
_Static_assert(sizeof(struct jr_shared) <= JR_HEADER_SIZE, "shared header fits its page");

struct jr_rec {
    uint64_t tag;
    uint32_t len;
    uint32_t flags;
};

_Static_assert(sizeof(struct jr_rec) == JR_REC_HEADER, "record header layout");

#define PF_MAX_TOKENS 256
#define PF_MAX_BYTES 4096

/* The scan reads one bit per byte of text: the bit of the pair that byte
 * starts (the byte and the next one, read as one 16-bit little-endian load;
 * the last byte is paired with NUL) in `start`, set where something may
 * begin: a token (either case), a digit (a card number), a "/" (rule (c)).
 * Almost every byte of ordinary text stops there.  Where a bit is set, the
 * byte's flags (`byte`) say which, and a token is looked for among those
 * sorted by first byte and within it by second, so a hit compares only the
 * few tokens that start with that pair.  `start` is 8 KiB and a text
 * touches few of its cache lines (one per two values of the second byte);
 * a table of one byte per pair would be 64 KiB, more than L1 holds. */
#define PF_TRI_BITS 14 /* log2 of the bits in `tri` */

struct jr_prefilter {
    uint64_t start[65536 / 64]; /* bit (a | b << 8): something may start at bytes a, b */
    /* bit tri_hash(a, b, c): some token of 3 bytes or more starts with a, b, c
     * (lower case).  Tokens start with common pairs ("se", "co", "pa"):
     * this rules out user, cost, page without comparing any token. */
    uint64_t tri[(1u << PF_TRI_BITS) / 64];
    uint8_t byte[256];          /* PB_* flags */
    uint16_t first[257];        /* tokens starting with byte c: [first[c], first[c+1]) */
    /* Each token's second byte (lower case), or 0 for a one-byte token: a
     * hit on a token's first byte compares this before anything else, so
     * the dozen tokens that start with "s" cost a byte compare each when
     * the text holds "se" (user, session) and is clean. */
    uint8_t second[PF_MAX_TOKENS];
    uint8_t anchor[PF_MAX_TOKENS]; /* PF_START, PF_END */
    uint16_t len[PF_MAX_TOKENS];
    uint16_t off[PF_MAX_TOKENS];
    char bytes[PF_MAX_BYTES];
    /* The longest run of digits inside any token, or JR_DIGIT_REACH_ANY when
     * a token starts or ends with a digit (see jr_prefilter_digit_reach). */
    uint8_t digit_reach;
    /* Per byte: SCREEN_START if a match may start at it (it starts a token,
     * is a "/"), plus 1 if it is a digit.  Summed over a span, below
     * CARD_DIGITS says at once that nothing starts there but digits too few
     * for a card number (see screened_clean). */
    uint32_t screen[256];
};

#define SCREEN_START (1u << 20)
#define CARD_DIGITS 13 /* rule (b): a card number holds 13 digits or more */

#define PF_START 1u /* "^tok": no ASCII letter or digit right before it */
#define PF_END 2u   /* "tok$": what may follow a key word right after it (is_key_end) */

struct jr_ring {
    int fd;
    /* This process's own open file description of the ring, holding its
     * liveness slot lock; -1 where OFD locks are not available.  Reopened in
     * a forked child (see child_after_fork), so parent and child have each
     * their own slot. */
    int live_fd;
    uint32_t live_flags; /* FLAG_SLOT | slot << 1, or 0: records carry the pid */
    struct jr_ring *next_open; /* every open ring of this process (open_rings) */
    uint8_t *map;
    size_t map_len;
    struct jr_shared *sh;
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    int policy;
    int64_t block_timeout_ns;
    /* consumer state, local to this handle */
    uint64_t rpos;
    uint64_t stall_pos;     /* position the consumer is waiting on, or ~0 */
    uint64_t stall_head;    /* head when that wait began */
    int64_t stall_since_ns;
    int64_t torn_timeout_ns;
    uint64_t seen_bytes;    /* records read (their aligned size), for count_lost */
    uint64_t seen_records;
    int zero_is_free; /* a file from before FREE tags: see claim() */
    uint32_t wake_seen; /* wake_seq when this handle's consumer last woke (jr_wait_consumer) */
    /* the secret prefilter, replaced whole by jr_set_prefilter (see there) */
    struct jr_prefilter *pf;
};

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static inline uint64_t align_up(uint64_t n) { return (n + (JR_ALIGN - 1)) & ~(uint64_t)(JR_ALIGN - 1); }

static inline struct jr_rec *rec_at(const jr_ring *r, uint64_t pos) {
    return (struct jr_rec *)(r->data + (pos & r->mask));
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t header_check(const struct jr_shared *sh) {
    return fnv1a(sh, offsetof(struct jr_shared, check));
}

/* The producer's pid, for record headers; kept without a system call on the
 * push path and refreshed in a forked child. */
static pid_t cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void refresh_pid(void) { __atomic_store_n(&cached_pid, getpid(), __ATOMIC_RELAXED); }

/* Every ring this process has open, so a forked child can take its own
 * liveness slots. */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static jr_ring *open_rings;

static void register_live(jr_ring *r);

static void before_fork(void) { pthread_mutex_lock(&open_mu); }
static void parent_after_fork(void) { pthread_mutex_unlock(&open_mu); }
/* The child shares its parent's open file descriptions, liveness locks
 * included: were it to keep them, a parent that died mid-push would look
 * alive for as long as the child lives.  It closes its copies (the parent's
 * locks stay, held by the parent's own descriptors) and takes new slots
 * before any of its threads can push. */
static void child_after_fork(void) {
    refresh_pid();
    for (jr_ring *r = open_rings; r; r = r->next_open) {
        if (r->live_fd >= 0)
            close(r->live_fd);
        register_live(r);
    }
    pthread_mutex_unlock(&open_mu);
}
static void init_pid(void) {
    refresh_pid();
    pthread_atfork(before_fork, parent_after_fork, child_after_fork);
}

/* The flags a record of this process carries (see FLAG_SLOT). */
static inline uint32_t producer_flags(const jr_ring *r) {
    uint32_t f = __atomic_load_n(&r->live_flags, __ATOMIC_RELAXED);
    return f ? f : (uint32_t)__atomic_load_n(&cached_pid, __ATOMIC_RELAXED) << FLAG_PID_SHIFT;
}

static int ofd_lock(int fd, short type, off_t at, int cmd) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = at;
    fl.l_len = 1;
    return fcntl(fd, cmd, &fl);
}

/* Take a liveness slot: open the ring file again (a new open file
 * description, through /proc so that a renamed or replaced path cannot give
 * another file) and lock one free byte in the slot range, starting from the
 * pid so that the first try almost always succeeds.  Without OFD locks
 * (before Linux 3.15, no /proc) records carry the pid instead. */
static void register_live(jr_ring *r) {
    __atomic_store_n(&r->live_flags, 0, __ATOMIC_RELAXED);
    r->live_fd = -1;
    /* Built by hand: this runs in a forked child, where only async-signal-
     * safe calls are allowed. */
    char name[32] = "/proc/self/fd/";
    char digits[12];
    int nd = 0;
    for (unsigned v = (unsigned)r->fd; nd == 0 || v; v /= 10)
        digits[nd++] = (char)('0' + v % 10);
    size_t at = strlen(name);
    while (nd)
        name[at++] = digits[--nd];
    name[at] = '\0';
    int fd = open(name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat a, b;
    if (fstat(fd, &a) != 0 || fstat(r->fd, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        close(fd);
        return;
    }
    uint32_t start = (uint32_t)getpid();
    for (uint32_t i = 0; i < LIVE_PROBES; i++) {
        uint32_t slot = (start + i * 40503u) % LIVE_SLOTS;
        if (ofd_lock(fd, F_WRLCK, LIVE_BASE + (off_t)slot, F_OFD_SETLK) == 0) {
            r->live_fd = fd;
            __atomic_store_n(&r->live_flags, FLAG_SLOT | slot << FLAG_PID_SHIFT, __ATOMIC_RELAXED);
            return;
        }
        if (errno != EAGAIN && errno != EACCES)
            break; /* EINVAL: no OFD locks here */
    }
    close(fd);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ------------------------------------------------------------------------ */
/* opening                                                                   */

static int validate(const struct jr_shared *sh, uint64_t file_size, uint64_t want_cap) {
    if (memcmp(sh->magic, JR_MAGIC, 8) != 0)
        return JR_BAD_MAGIC;
    if (sh->version != JR_VERSION)
        return JR_BAD_VERSION;
    if (sh->check != header_check(sh))
        return JR_CORRUPT;
    uint64_t cap = sh->capacity;
    if (sh->header_size != JR_HEADER_SIZE || cap < JR_MIN_CAPACITY || cap > JR_MAX_CAPACITY ||
        (cap & (cap - 1)) != 0 || file_size != JR_HEADER_SIZE + cap)
        return JR_BAD_SIZE;
    if (want_cap != 0 && want_cap != cap)
        return JR_SIZE_MISMATCH;
    return JR_OK;
}

/* The shared cursors are in a file: check them before trusting them, so a
 * damaged or hostile file can stop the consumer but never make it read or
 * write outside the mapping. */
static inline int cursors_sane(const jr_ring *r, uint64_t tail, uint64_t head, uint64_t pos) {
    return tail <= pos && pos <= head && head - tail <= r->cap && !((head | tail) % JR_ALIGN);
}

/* Give the file all its blocks now.  A sparse file would allocate them on the
 * first write to each page, inside a producer's push, and on a full disk that
 * write would raise SIGBUS in the application.  Where the file system cannot
 * fallocate, a fresh file gets its zeros written; an existing one (live
 * records) is left as it is. */
static int allocate(int fd, off_t size, int fresh) {
    int e = posix_fallocate(fd, 0, size);
    if (e == 0)
        return JR_OK;
    if (e != EOPNOTSUPP && e != EINVAL) {
        errno = e;
        return JR_ERRNO;
    }
    if (!fresh)
        return JR_OK;
    static const char zeros[65536];
    for (off_t off = 0; off < size; off += (off_t)sizeof zeros) {
        size_t n = (size_t)(size - off) < sizeof zeros ? (size_t)(size - off) : sizeof zeros;
        if (pwrite(fd, zeros, n, off) != (ssize_t)n)
            return JR_ERRNO;
    }
    return JR_OK;
}

/* Create a fresh ring under a temporary name and link it into place, so that
 * no process ever maps a half-initialised header.  Returns JR_OK, or -EEXIST
 * style failure through errno when another process won the race. */
static int create_file(const char *path, uint64_t cap) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 64);
    if (!tmp)
        return JR_ERRNO;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(tmp, plen + 64, "%s.%d.%016llx.tmp", path, (int)getpid(), (unsigned long long)rnd);

    int rc = JR_ERRNO;
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out;
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)(JR_HEADER_SIZE + cap)) != 0)
        goto fail;
    if (allocate(fd, (off_t)(JR_HEADER_SIZE + cap), 1) != JR_OK)
        goto fail;

    struct jr_shared sh;
    memset(&sh, 0, sizeof sh);
    memcpy(sh.magic, JR_MAGIC, 8);
    sh.version = JR_VERSION;
    sh.header_size = JR_HEADER_SIZE;
    sh.capacity = cap;
    sh.ring_id = rnd;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sh.created_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    sh.check = header_check(&sh);
    sh.features = FEATURE_FREE_TAGS;
    if (pwrite(fd, &sh, sizeof sh, 0) != (ssize_t)sizeof sh)
        goto fail;
    /* Every 16-byte unit starts FREE for its first-lap position. */
    {
        static uint64_t units[8192]; /* 64 KiB: tag, len and flags of 4096 units */
        for (uint64_t base = 0; base < cap; base += sizeof units) {
            size_t n = (size_t)(cap - base < sizeof units ? cap - base : sizeof units);
            for (size_t i = 0; i < n / 16; i++) {
                units[2 * i] = (base + 16 * i) ^ TAG_FREE;
                units[2 * i + 1] = 0;
            }
            if (pwrite(fd, units, n, (off_t)(JR_HEADER_SIZE + base)) != (ssize_t)n)
                goto fail;
        }
    }
    if (link(tmp, path) != 0)
        goto fail; /* errno == EEXIST: somebody else created it first */
    rc = JR_OK;
fail: {
    int saved = errno;
    unlink(tmp);
    close(fd);
    errno = saved;
}
out:
    free(tmp);
    return rc;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* MAP_POPULATE maps a shared file's pages read-only (populating does not
 * dirty them), so the first write to each page of the ring would take a
 * write fault (ext4's page_mkwrite: several microseconds each) inside a
 * push.  Taken here, at open, instead.  Older kernels say EINVAL: then the
 * first lap faults as before. */
static void prefault_writable(void *map, size_t len) {
    (void)madvise(map, len, MADV_POPULATE_WRITE);
}

int jr_open(const char *path, uint64_t capacity, int create, int policy, int64_t block_timeout_ns,
            jr_ring **out) {
    *out = NULL;
    if (capacity != 0 && (capacity < JR_MIN_CAPACITY || capacity > JR_MAX_CAPACITY ||
                          (capacity & (capacity - 1)) != 0))
        return JR_INVALID;
    if (policy != JR_POLICY_BLOCK && policy != JR_POLICY_DROP)
        return JR_INVALID;

    pthread_once(&pid_once, init_pid);
    int fd = -1;
    for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
        /* O_NOFOLLOW: a symlink planted at the path is refused (ELOOP). */
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 || errno != ENOENT || !create)
            break;
        if (capacity == 0) {
            errno = EINVAL;
            return JR_INVALID;
        }
        if (create_file(path, capacity) != JR_OK && errno != EEXIST)
            return JR_ERRNO;
    }
    if (fd < 0)
        return JR_ERRNO;

    struct stat st;
    struct jr_shared hdr;
    int rc = JR_ERRNO;
    if (fstat(fd, &st) != 0)
        goto fail;
    if (!S_ISREG(st.st_mode)) {
        rc = JR_INSECURE;
        goto fail;
    }
    if ((uint64_t)st.st_size < sizeof hdr) {
        rc = st.st_size == 0 ? JR_BAD_MAGIC : JR_BAD_SIZE;
        goto fail;
    }
    if (pread(fd, &hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
        goto fail;
    rc = validate(&hdr, (uint64_t)st.st_size, capacity);
    if (rc != JR_OK)
        goto fail;
    /* The ring carries log records and the consumer trusts its layout: only a
     * file of ours that nobody else can read or write will do. */
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        rc = JR_INSECURE;
        goto fail;
    }
    rc = allocate(fd, (off_t)st.st_size, 0);
    if (rc != JR_OK)
        goto fail;

    jr_ring *r = calloc(1, sizeof *r);
    if (!r) {
        rc = JR_ERRNO;
        goto fail;
    }
    r->map_len = (size_t)st.st_size;
    /* MAP_POPULATE maps every page up front, so no push takes a page fault. */
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (r->map == MAP_FAILED) {
        free(r);
        rc = JR_ERRNO;
        goto fail;
    }
    prefault_writable(r->map, r->map_len);
    r->fd = fd;
    r->live_fd = -1;
    r->sh = (struct jr_shared *)r->map;
    r->wake_seen = __atomic_load_n(&r->sh->wake_seq, __ATOMIC_ACQUIRE);
    r->data = r->map + JR_HEADER_SIZE;
    r->cap = hdr.capacity;
    r->mask = hdr.capacity - 1;
    r->policy = policy;
    r->block_timeout_ns = block_timeout_ns;
    r->torn_timeout_ns = 1000000000LL;
    r->stall_pos = UINT64_MAX;
    r->zero_is_free = !(__atomic_load_n(&r->sh->features, __ATOMIC_RELAXED) & FEATURE_FREE_TAGS);
    uint64_t tail = __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&r->sh->head, __ATOMIC_ACQUIRE);
    if (!cursors_sane(r, tail, head, tail)) {
        jr_close(r);
        return JR_CORRUPT;
    }
    r->rpos = tail;
    pthread_mutex_lock(&open_mu);
    register_live(r);
    r->next_open = open_rings;
    open_rings = r;
    pthread_mutex_unlock(&open_mu);
    *out = r;
    return JR_OK;
fail: {
    int saved = errno;
    close(fd);
    errno = saved;
}
    return rc;
}

void jr_close(jr_ring *r) {
    if (!r)
        return;
    pthread_mutex_lock(&open_mu);
    for (jr_ring **p = &open_rings; *p; p = &(*p)->next_open)
        if (*p == r) {
            *p = r->next_open;
            break;
        }
    pthread_mutex_unlock(&open_mu);
    if (r->live_fd >= 0)
        close(r->live_fd);
    munmap(r->map, r->map_len);
    close(r->fd);
    free(__atomic_load_n(&r->pf, __ATOMIC_ACQUIRE));
    free(r);
}

static inline uint64_t max_record(const jr_ring *r) {
    /* With records of at most cap/2 bytes (header and padding included), an
     * empty ring always has room: a record that does not fit before the end
     * of the area starts after its midpoint, so the pad plus the record is at
     * most cap.  Larger records could wait forever on an empty ring. */
    uint64_t half = r->cap / 2 - JR_REC_HEADER;
    return half < UINT32_MAX - JR_REC_HEADER ? half : UINT32_MAX - JR_REC_HEADER; /* len is 32 bits */
}

uint64_t jr_max_record(const jr_ring *r) { return max_record(r); }

/* ------------------------------------------------------------------------ */
/* producers: any number of threads and processes, concurrently              */

static inline void note_high_water(jr_ring *r, uint64_t used) {
    uint64_t hw = __atomic_load_n(&r->sh->high_water, __ATOMIC_RELAXED);
    /* Relaxed CAS: the counter is statistics, ordered with nothing else. */
    while (used > hw &&
           !__atomic_compare_exchange_n(&r->sh->high_water, &hw, used, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* Try once to reserve `need` bytes.  On success *pos is the record's position
 * and *pad the size of the filler placed before it (0 if none). */
static inline int try_reserve(jr_ring *r, uint64_t need, uint64_t *pos, uint64_t *pad) {
    struct jr_shared *sh = r->sh;
    uint64_t head = __atomic_load_n(&sh->head, __ATOMIC_RELAXED);
    for (;;) {
        /* Acquire pairs with the consumer's release of the tail: the consumer
         * has finished reading and zeroing everything before it, so we may
         * overwrite that space. */
        uint64_t tail = __atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE);
        if (tail > head) {
            /* Our head is older than a release the consumer made since: the
             * ring is not full, our view is stale.  Look again. */
            head = __atomic_load_n(&sh->head, __ATOMIC_RELAXED);
            continue;
        }
        uint64_t off = head & r->mask;
        uint64_t p = (off + need > r->cap) ? r->cap - off : 0;
        uint64_t total = p + need;
        if (head + total - tail > r->cap)
            return JR_FULL;
        /* The CAS makes [head, head + total) ours alone; on failure `head` is
         * reloaded and we recompute against the new value.  Relaxed is enough
         * for the reservation itself: what we write is published later by the
         * release store of each record's tag. */
        if (__atomic_compare_exchange_n(&sh->head, &head, head + total, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            note_high_water(r, head + total - tail);
            *pos = head + p;
            *pad = p;
            return JR_OK;
        }
    }
}

static inline int is_claim(uint64_t tag, uint64_t pos) {
    return ((tag ^ pos ^ TAG_CLAIM) & CLAIM_HIGH) == 0 && (uint32_t)tag != 0;
}

/* Claim the header at `at` for the owner `flags`: 1 if ours, 0 if the
 * consumer gave up on this reservation first (then nothing may be written
 * there, not even the length).  See the file comment for why this cannot
 * succeed on space released since the reservation.
 *
 * Files created before FREE tags have zeros in their free space, and zero
 * carries no lap: there a producer first checks that the tail has not passed
 * its reservation, which leaves a window of a few instructions.  A new ring
 * file (delete the old one with every process stopped) closes it. */
static inline int claim(jr_ring *r, uint64_t at, uint32_t flags) {
    uint64_t *tag = &rec_at(r, at)->tag;
    uint64_t mine = ((at ^ TAG_CLAIM) & CLAIM_HIGH) | flags;
    uint64_t expected = at ^ TAG_FREE;
    /* Acq_rel: the claim is ordered before our header and payload writes,
     * and after the consumer's release of this space. */
    if (__atomic_compare_exchange_n(tag, &expected, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return 1;
    if (!r->zero_is_free || expected != 0 || __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE) > at)
        return 0;
    return __atomic_compare_exchange_n(tag, &expected, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static int write_pad(jr_ring *r, uint64_t at, uint64_t pad) {
    if (!claim(r, at, producer_flags(r)))
        return 0;
    struct jr_rec *h = rec_at(r, at);
    h->len = (uint32_t)(pad - JR_REC_HEADER);
    h->flags = FLAG_PAD;
    /* Release: the length is visible before the consumer can see the tag. */
    __atomic_store_n(&h->tag, at ^ TAG_DONE, __ATOMIC_RELEASE);
    return 1;
}

/* Claim, then RESV with the length and owner, then the payload, then DONE. */
static inline int write_header(jr_ring *r, uint64_t pos, size_t len, uint32_t flags) {
    if (!claim(r, pos, flags))
        return 0;
    struct jr_rec *h = rec_at(r, pos);
    h->len = (uint32_t)len;
    h->flags = flags;
    /* RESV tells a consumer that finds this record unfinished how long it is,
     * so a producer killed from here on costs exactly this one record. */
    __atomic_store_n(&h->tag, pos ^ TAG_RESV, __ATOMIC_RELEASE);
    return 1;
}

static inline int write_record(jr_ring *r, uint64_t pos, const uint8_t *data, size_t len) {
    if (!write_header(r, pos, len, producer_flags(r)))
        return 0;
    struct jr_rec *h = rec_at(r, pos);
    memcpy((uint8_t *)(h + 1), data, len);
    /* Release: the payload is visible before the record reads as committed. */
    __atomic_store_n(&h->tag, pos ^ TAG_DONE, __ATOMIC_RELEASE);
    return 1;
}

/* The longest a producer sleeps on a full ring before it looks again by
 * itself.  A release wakes it at once (wake_room); this bound is only for a
 * wake that never comes, e.g. a consumer built before wake_room existed. */
#define ROOM_NAP_NS 10000000LL

#ifdef __linux__
static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts) {
    /* Plain (not _PRIVATE) ops: every word waited on is in the ring's
     * header, a file mapped by several processes. */
    return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}
#endif

/* Sleep until a release moves the tail (or `nap_ns` pass), then try again.
 *
 * The waiter counts itself, then looks at the tail; the consumer stores the
 * tail, then reads the count (wake_room).  Both with a full fence between,
 * so one of them sees the other: either this try succeeds, or the consumer
 * sees a waiter, moves room_seq and wakes it.  room_seq is read before the
 * count goes up, so a wake between this try and the sleep makes FUTEX_WAIT
 * return at once (the word no longer holds `seq`) instead of being lost. */
static int wait_for_room(jr_ring *r, uint64_t need, int64_t nap_ns, uint64_t *pos, uint64_t *pad) {
#ifdef __linux__
    struct jr_shared *sh = r->sh;
    uint32_t seq = __atomic_load_n(&sh->room_seq, __ATOMIC_ACQUIRE);
    __atomic_fetch_add(&sh->room_waiters, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int rc = try_reserve(r, need, pos, pad);
    if (rc != JR_OK) {
        struct timespec ts = {(time_t)(nap_ns / 1000000000LL), (long)(nap_ns % 1000000000LL)};
        /* EAGAIN (moved already), EINTR, ETIMEDOUT: all mean look again. */
        futex(&sh->room_seq, FUTEX_WAIT, seq, &ts);
        rc = try_reserve(r, need, pos, pad);
    }
    /* Relaxed: the count only decides whether releases call futex. */
    __atomic_fetch_sub(&sh->room_waiters, 1, __ATOMIC_RELAXED);
    return rc;
#else
    struct timespec ts = {0, nap_ns < 1000000 ? (long)nap_ns : 1000000L};
    nanosleep(&ts, NULL);
    return try_reserve(r, need, pos, pad);
#endif
}

/* The consumer moved the tail: wake the producers waiting for room (and
 * flush() calls waiting for the tail), if any.  Called after the release
 * store of the tail, once the release lock is given back; see wait_for_room. */
static void wake_room(jr_ring *r) {
#ifdef __linux__
    struct jr_shared *sh = r->sh;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sh->room_waiters, __ATOMIC_RELAXED) == 0)
        return;
    __atomic_fetch_add(&sh->room_seq, 1, __ATOMIC_RELEASE);
    futex(&sh->room_seq, FUTEX_WAKE, INT_MAX, NULL);
#else
    (void)r;
#endif
}

static void note_wait(jr_ring *r, int64_t waited_ns) {
    struct jr_shared *sh = r->sh;
    uint64_t ns = waited_ns > 0 ? (uint64_t)waited_ns : 0;
    /* Relaxed: statistics, ordered with nothing else. */
    __atomic_fetch_add(&sh->full_waits, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sh->full_wait_ns, ns, __ATOMIC_RELAXED);
    uint64_t max = __atomic_load_n(&sh->full_wait_max_ns, __ATOMIC_RELAXED);
    while (ns > max &&
           !__atomic_compare_exchange_n(&sh->full_wait_max_ns, &max, ns, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* Reserve `need` bytes, waiting for room as `policy` allows.  A producer that
 * waits has no GIL to give up here: callers from Python come through cffi,
 * which releases it around every call, and the C encoder (speedups.c) never
 * waits (JR_POLICY_TRY).  It spins briefly (a release may be under way),
 * then sleeps until a release wakes it: no polling that would take the core
 * from the consumer it waits for, and no sleep that outlasts the release. */
static int reserve_wait(jr_ring *r, uint64_t need, int policy, int64_t timeout_ns, uint64_t *pos,
                        uint64_t *pad) {
    int rc = try_reserve(r, need, pos, pad);
    if (rc == JR_OK)
        return rc;
    if ((policy == JR_POLICY_BLOCK || policy == JR_POLICY_SPILL) && timeout_ns != 0) {
        int64_t start = now_ns();
        for (unsigned spin = 0; spin < 64 && rc != JR_OK; spin++) {
            cpu_relax();
            rc = try_reserve(r, need, pos, pad);
        }
        while (rc != JR_OK) {
            int64_t nap = ROOM_NAP_NS;
            if (timeout_ns > 0) {
                int64_t left = timeout_ns - (now_ns() - start);
                if (left <= 0)
                    break;
                if (left < nap)
                    nap = left;
            }
            rc = wait_for_room(r, need, nap, pos, pad);
        }
        note_wait(r, now_ns() - start);
        if (rc == JR_OK)
            return rc;
    }
    if (policy != JR_POLICY_TRY && policy != JR_POLICY_SPILL)
        __atomic_fetch_add(&r->sh->dropped, 1, __ATOMIC_RELAXED);
    return JR_FULL;
}

/* Reserve and write; `stall_ns` > 0 only in the test hook below.  Out of
 * line: jr_push_ex inlines the common case and calls this for the rest. */
__attribute__((noinline)) static int push(jr_ring *r, const uint8_t *data, size_t len, int policy,
                                          int64_t block_timeout_ns, int64_t stall_ns) {
    if (len > max_record(r))
        return JR_TOO_LARGE;
    for (;;) {
        uint64_t pos, pad;
        int rc = reserve_wait(r, align_up(JR_REC_HEADER + len), policy, block_timeout_ns, &pos, &pad);
        if (rc != JR_OK)
            return rc;
        if (stall_ns > 0) {
            struct timespec ts = {(time_t)(stall_ns / 1000000000LL), (long)(stall_ns % 1000000000LL)};
            nanosleep(&ts, NULL);
            stall_ns = 0;
        }
        if ((!pad || write_pad(r, pos - pad, pad)) && write_record(r, pos, data, len))
            return JR_OK;
        /* We were stopped or starved past the torn timeout before claiming,
         * and the consumer skipped the reservation: make another one. */
    }
}

int jr_push_ex(jr_ring *r, const uint8_t *data, size_t len, int policy, int64_t block_timeout_ns) {
    /* The common case without a call: room at once and the claim ours.  A
     * full ring, an oversize record or a lost claim goes to push(), which
     * tries again from the start (a reservation made here is complete or
     * was taken from us, so nothing is left half done). */
    uint64_t pos, pad;
    if (len <= max_record(r) && try_reserve(r, align_up(JR_REC_HEADER + len), &pos, &pad) == JR_OK &&
        (!pad || write_pad(r, pos - pad, pad)) && write_record(r, pos, data, len))
        return JR_OK;
    return push(r, data, len, policy, block_timeout_ns, 0);
}

int jr_set_policy(jr_ring *r, int policy, int64_t block_timeout_ns) {
    if (policy != JR_POLICY_BLOCK && policy != JR_POLICY_DROP && policy != JR_POLICY_SPILL)
        return JR_INVALID;
    /* Relaxed: a push that races this uses the old policy or the new one. */
    __atomic_store_n(&r->policy, policy, __ATOMIC_RELAXED);
    __atomic_store_n(&r->block_timeout_ns, block_timeout_ns, __ATOMIC_RELAXED);
    return JR_OK;
}

void jr_count_drop(jr_ring *r) { __atomic_fetch_add(&r->sh->dropped, 1, __ATOMIC_RELAXED); }

int jr_push(jr_ring *r, const uint8_t *data, size_t len) {
    return jr_push_ex(r, data, len, __atomic_load_n(&r->policy, __ATOMIC_RELAXED),
                      __atomic_load_n(&r->block_timeout_ns, __ATOMIC_RELAXED));
}

int jr_push_checked(jr_ring *r, const uint8_t *data, size_t len) {
    if (jr_suspect(r, data, len))
        return JR_SUSPECT;
    return jr_push_ex(r, data, len, __atomic_load_n(&r->policy, __ATOMIC_RELAXED),
                      __atomic_load_n(&r->block_timeout_ns, __ATOMIC_RELAXED));
}

int jr_noop(jr_ring *r, const uint8_t *data, size_t len) {
    (void)r;
    (void)data;
    (void)len;
    return 0;
}

int jr_debug_reserve_only(jr_ring *r, size_t len, int mode) {
    if (len > max_record(r))
        return JR_TOO_LARGE;
    uint64_t pos, pad;
    int rc = reserve_wait(r, align_up(JR_REC_HEADER + len), JR_POLICY_DROP, 0, &pos, &pad);
    if (rc != JR_OK)
        return rc;
    if (pad && !write_pad(r, pos - pad, pad))
        return JR_INVALID;
    uint32_t flags = mode == 2 ? (uint32_t)__atomic_load_n(&cached_pid, __ATOMIC_RELAXED) << FLAG_PID_SHIFT
                               : producer_flags(r);
    if (mode == 3 && !claim(r, pos, flags))
        return JR_INVALID;
    if ((mode == 1 || mode == 2) && !write_header(r, pos, len, flags))
        return JR_INVALID;
    return JR_OK;
}

int jr_debug_push_stalled(jr_ring *r, const uint8_t *data, size_t len, int64_t stall_ns) {
    return push(r, data, len, JR_POLICY_BLOCK, -1, stall_ns);
}

/* ------------------------------------------------------------------------ */
/* the secret prefilter                                                      */

static inline uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

#define PB_TOKEN 1u /* some token starts with this byte, ignoring ASCII case */
#define PB_DIGIT 2u /* 0-9 */
#define PB_SEP 4u   /* ' ', tab, '-' or '.': kept inside a card number */
#define PB_SLASH 8u /* '/': an '@' may follow (rule (c)) */
#define PB_SHORT 16u /* a token of one or two bytes starts with this byte: `tri` cannot rule it out */

static inline int is_word(uint8_t c) {
    return (uint8_t)((c | 32) - 'a') < 26 || (uint8_t)(c - '0') < 10;
}

/* What may follow a key word in a pair: key=, key:, "key", 'key', \"key\",
 * --key value, and the separators a key's spelling may end with. */
static inline int is_key_end(uint8_t c) {
    return c == ' ' || c == '\t' || c == '=' || c == ':' || c == '"' || c == '\'' ||
           c == '\\' || c == '_' || c == '-' || c == '.';
}

/* The pair of bytes at p: p[0] in the low byte, p[1] in the high one (one
 * 16-bit load on a little-endian machine). */
static inline unsigned load_pair(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
#else
    return (unsigned)p[0] | ((unsigned)p[1] << 8);
#endif
}

static inline void set_start(uint64_t *start, unsigned a, unsigned b) {
    unsigned pair = a | b << 8;
    start[pair >> 6] |= (uint64_t)1 << (pair & 63);
}

static inline int starts(const uint64_t *start, unsigned pair) { return (int)(start[pair >> 6] >> (pair & 63) & 1); }

static inline unsigned tri_hash(uint8_t a, uint8_t b, uint8_t c) {
    return (((uint32_t)a | (uint32_t)b << 8 | (uint32_t)c << 16) * 0x9E3779B1u) >> (32 - PF_TRI_BITS);
}

static inline int has_tri(const uint64_t *tri, unsigned h) { return (int)(tri[h >> 6] >> (h & 63) & 1); }

static inline uint8_t upper(uint8_t c) { return (c >= 'a' && c <= 'z') ? (uint8_t)(c - 32) : c; }

/* `reach` raised to what the token t[0..n) needs: JR_DIGIT_REACH_ANY if it
 * starts or ends with a digit, else its longest run of digits. */
static unsigned token_digit_reach(const uint8_t *t, size_t n, unsigned reach) {
    if (n == 0)
        return reach;
    if ((uint8_t)(t[0] - '0') < 10 || (uint8_t)(t[n - 1] - '0') < 10)
        return JR_DIGIT_REACH_ANY;
    for (size_t i = 0, run = 0; i < n; i++) {
        run = (uint8_t)(t[i] - '0') < 10 ? run + 1 : 0;
        if (run > reach)
            reach = (unsigned)run;
    }
    return reach < JR_DIGIT_REACH_ANY ? reach : JR_DIGIT_REACH_ANY;
}

/* Builds a new table and swaps it in with one atomic store, so producers
 * pushing meanwhile see the old rules or the new ones, never half of each.
 * The old table is not freed: a producer may still be scanning it, and a
 * process changes its rules only when it is configured again. */
int jr_set_prefilter(jr_ring *r, const char *tokens, size_t len) {
    if (len > PF_MAX_BYTES)
        return JR_INVALID;
    uint16_t off[PF_MAX_TOKENS], n_of[PF_MAX_TOKENS];
    uint8_t anchor[PF_MAX_TOKENS];
    unsigned count = 0, reach = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && tokens[j] != '\0')
            j++;
        if (j > i) {
            /* "^tok" and "tok$" carry anchors; the token is what is left. */
            size_t a = i, b = j;
            uint8_t flags = 0;
            if (b - a > 1 && tokens[a] == '^') {
                flags |= PF_START;
                a++;
            }
            if (b - a > 1 && tokens[b - 1] == '$') {
                flags |= PF_END;
                b--;
            }
            if (count >= PF_MAX_TOKENS)
                return JR_INVALID;
            off[count] = (uint16_t)a;
            n_of[count] = (uint16_t)(b - a);
            anchor[count] = flags;
            count++;
            reach = token_digit_reach((const uint8_t *)tokens + a, b - a, reach);
        }
        i = j + 1;
    }
    struct jr_prefilter *pf = calloc(1, sizeof *pf);
    if (!pf)
        return JR_ERRNO;
    pf->digit_reach = (uint8_t)reach;
    for (unsigned d = '0'; d <= '9'; d++)
        pf->byte[d] |= PB_DIGIT;
    pf->byte[' '] |= PB_SEP;
    pf->byte['\t'] |= PB_SEP;
    pf->byte['-'] |= PB_SEP;
    pf->byte['.'] |= PB_SEP;
    pf->byte['/'] |= PB_SLASH;
    for (unsigned i = 0; i < len; i++)
        pf->bytes[i] = (char)lower((uint8_t)tokens[i]);
    uint8_t every[256] = {0}; /* a one-byte token is this byte */
    /* counting sort of the tokens by first byte, then an insertion sort of
     * each first byte's tokens by second byte (a one-byte token's is 0) */
    unsigned n = 0;
    for (unsigned c = 0; c < 256; c++) {
        pf->first[c] = (uint16_t)n;
        for (unsigned t = 0; t < count; t++) {
            uint8_t a = (uint8_t)pf->bytes[off[t]];
            if (a != c)
                continue;
            uint8_t b = n_of[t] > 1 ? (uint8_t)pf->bytes[off[t] + 1] : 0;
            unsigned at = n;
            for (; at > pf->first[c] && pf->second[at - 1] > b; at--) {
                pf->off[at] = pf->off[at - 1];
                pf->len[at] = pf->len[at - 1];
                pf->anchor[at] = pf->anchor[at - 1];
                pf->second[at] = pf->second[at - 1];
            }
            pf->off[at] = off[t];
            pf->len[at] = n_of[t];
            pf->anchor[at] = anchor[t];
            pf->second[at] = b;
            n++;
            pf->byte[a] |= PB_TOKEN;
            pf->byte[upper(a)] |= PB_TOKEN;
            if (n_of[t] <= 2) {
                pf->byte[a] |= PB_SHORT;
                pf->byte[upper(a)] |= PB_SHORT;
            } else {
                unsigned h = tri_hash(a, b, (uint8_t)pf->bytes[off[t] + 2]);
                pf->tri[h >> 6] |= (uint64_t)1 << (h & 63);
            }
            if (n_of[t] == 1) {
                every[a] = every[upper(a)] = 1;
                continue;
            }
            set_start(pf->start, a, b);
            set_start(pf->start, upper(a), b);
            set_start(pf->start, a, upper(b));
            set_start(pf->start, upper(a), upper(b));
        }
    }
    for (unsigned c = 0; c < 256; c++)
        pf->screen[c] = ((pf->byte[c] & (PB_TOKEN | PB_SLASH)) ? SCREEN_START : 0) + ((pf->byte[c] & PB_DIGIT) ? 1 : 0);
    /* Whatever follows (NUL after the last byte too), a digit, a "/" and a
     * one-byte token ("@", a digit with pii=True) start something. */
    for (unsigned a = 0; a < 256; a++)
        if (every[a] || (pf->byte[a] & (PB_DIGIT | PB_SLASH)))
            for (unsigned b = 0; b < 256; b++)
                set_start(pf->start, a, b);
    pf->first[256] = (uint16_t)n;
    /* Release: the table is complete before any producer can load it. */
    __atomic_store_n(&r->pf, pf, __ATOMIC_RELEASE);
    return JR_OK;
}

static inline int is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Rule (a) at data[i]: 1 if a token matches there, else 0. */
static int token_at(const struct jr_prefilter *pf, const uint8_t *data, size_t len, size_t i, int key) {
    uint8_t a = lower(data[i]);
    uint8_t b = i + 1 < len ? lower(data[i + 1]) : 0;
    for (unsigned t = pf->first[a]; t < pf->first[a + 1]; t++) {
        size_t n = pf->len[t];
        if (n > 1 && pf->second[t] != b) {
            if (pf->second[t] > b)
                break; /* sorted by second byte: none further starts with a, b */
            continue;
        }
        if (n > len - i)
            continue;
        const char *tok = pf->bytes + pf->off[t];
        size_t m = 2;
        while (m < n && lower(data[i + m]) == (uint8_t)tok[m])
            m++;
        if (m < n)
            continue;
        if ((pf->anchor[t] & PF_START) && i > 0 && is_word(data[i - 1]))
            continue;
        if ((pf->anchor[t] & PF_END) && (i + n < len ? !is_key_end(data[i + n]) : !key))
            continue;
        return 1;
    }
    return 0;
}

/* The first p in [p, stop) where something may start (its pair's bit in
 * `start` is set), or stop.  Four pairs a step while four are left (p[4] is
 * at most *stop, the last byte, which is read): the bound is compared once
 * for the four, and each pair still leaves the loop at once when it hits. */
static inline const uint8_t *skip_clean(const uint64_t *start, const uint8_t *p, const uint8_t *stop) {
    for (; p + 4 <= stop; p += 4) {
        if (starts(start, load_pair(p)))
            return p;
        if (starts(start, load_pair(p + 1)))
            return p + 1;
        if (starts(start, load_pair(p + 2)))
            return p + 2;
        if (starts(start, load_pair(p + 3)))
            return p + 3;
    }
    while (p < stop && !starts(start, load_pair(p)))
        p++;
    return p;
}

/* Whether the screen alone shows that nothing starts in data[from, upto):
 * no byte there starts a token or is a "/", and a run of digits and
 * separators starting there holds fewer than CARD_DIGITS digits.  Such a
 * run's digits lie in the span or, when it reaches upto, in the run of
 * digits and separators that goes on from upto: both are counted.  One table
 * load and add a byte where the pair table takes five instructions or more,
 * and an identifier's digits are not walked run by run.  0 says nothing:
 * the scan decides, from *at (the screen stops at the first eight bytes that
 * hold a start; when no byte before them is a digit, nothing starts before
 * them either, and the scan begins there). */
__attribute__((always_inline)) static inline int screened_clean(const struct jr_prefilter *pf, const uint8_t *data,
                                                                size_t len, size_t from, size_t upto, size_t *at) {
    const uint32_t *screen = pf->screen;
    uint64_t sum = 0; /* digits, and SCREEN_START for each byte something may start at */
    const uint8_t *p = data + from, *stop = data + upto, *end = data + len;
    for (; stop - p >= 8; p += 8) {
        uint64_t eight = (uint64_t)screen[p[0]] + screen[p[1]] + screen[p[2]] + screen[p[3]] + screen[p[4]] +
                         screen[p[5]] + screen[p[6]] + screen[p[7]];
        if (sum + eight >= CARD_DIGITS) {
            *at = sum == 0 ? (size_t)(p - data) : from;
            return 0;
        }
        sum += eight;
    }
    switch (stop - p) { /* the last 0-7 bytes */
    case 7: sum += screen[p[6]]; /* fall through */
    case 6: sum += screen[p[5]]; /* fall through */
    case 5: sum += screen[p[4]]; /* fall through */
    case 4: sum += screen[p[3]]; /* fall through */
    case 3: sum += screen[p[2]]; /* fall through */
    case 2: sum += screen[p[1]]; /* fall through */
    case 1: sum += screen[p[0]]; /* fall through */
    default: break;
    }
    for (p = stop; sum < CARD_DIGITS && p < end && (pf->byte[*p] & (PB_DIGIT | PB_SEP)); p++)
        sum += (pf->byte[*p] & PB_DIGIT) != 0;
    *at = from;
    return sum < CARD_DIGITS;
}

/* The same rule as janus_utils.security.might_contain_secret, over UTF-8:
 * (a) a token occurs, ASCII case-insensitively ("^tok" only where no ASCII
 * letter or digit comes right before it, "tok$" only where what may follow a
 * key word comes right after, see is_key_end); (b) a run of digits, spaces,
 * tabs, dashes and dots holds 13 or more digits (a card number); (c) "/" is
 * followed by "@" before the next ASCII white space (credentials in a URL,
 * Oracle's user/password@db).  With `key` the data is a key of its own (a
 * dict key, an item of a list of pairs): its end counts as a key word's end.
 *
 * One bit of `pf->start` per byte decides whether anything starts here;
 * almost all bytes of ordinary text need nothing more.
 *
 * Only what starts in [from, upto) is looked for (jr_suspect_span): a match
 * starting there is read to its end, past upto, and data[from - 1] is read
 * as the byte before data[from]. */
__attribute__((always_inline)) static inline int scan(const struct jr_prefilter *pf, const uint8_t *data, size_t len,
                                                      int key, size_t from, size_t upto) {
    const uint64_t *start = pf->start;
    const uint8_t *flags = pf->byte;
    size_t last = len - 1;
    size_t stop = upto < last ? upto : last;
    size_t slash_seen = 0; /* "/" scans have covered [.., slash_seen) */
    size_t i = from;
    for (;;) {
        i = (size_t)(skip_clean(start, data + i, data + stop) - data);
        if (i >= upto)
            return 0;
        /* The last byte is paired with a NUL, which continues no token. */
        if (i == last && !starts(start, data[i]))
            return 0;
        if (i > last)
            return 0;
        unsigned k = flags[data[i]];
        if (k & PB_DIGIT) {
            /* A run of digits and separators, counted to its end here: a
             * card number if it holds 13 digits.  A byte in it may start a
             * token too (a digit with pii=True, "-----begin"). */
            size_t digits = 0;
            for (; i < len; i++) {
                /* the common case: digits no token starts with, counted at once */
                const uint8_t *q = data + i, *end = data + len;
                while (q < end && flags[*q] == PB_DIGIT)
                    q++;
                digits += (size_t)(q - (data + i));
                if (digits >= CARD_DIGITS)
                    return 1;
                i = (size_t)(q - data);
                if (i == len)
                    break;
                k = flags[data[i]];
                if (k & PB_DIGIT) {
                    if (++digits >= CARD_DIGITS)
                        return 1;
                } else if (!(k & PB_SEP)) {
                    break; /* the byte after the run: looked at from the start */
                }
                if ((k & PB_TOKEN) && token_at(pf, data, len, i, key))
                    return 1;
            }
            continue;
        }
        if (k & PB_SLASH) {
            /* Each "/" looks ahead to the next white space; a later "/"
             * before that space would look at the same bytes again, so skip
             * it (keeps hostile "a/a/a/..." input linear).  No token starts
             * with "/" (key words are letters, digits and "_"). */
            if (i >= slash_seen) {
                size_t m = i + 1;
                for (; m < len && !is_space(data[m]); m++)
                    if (data[m] == '@')
                        return 1;
                slash_seen = m;
            }
        } else if ((k & PB_SHORT) ||
                   (i + 2 < len && has_tri(pf->tri, tri_hash(lower(data[i]), lower(data[i + 1]), lower(data[i + 2]))))) {
            /* Otherwise every token that starts with this byte is 3 bytes
             * or longer, and none starts with these 3 (or fewer are left). */
            if (token_at(pf, data, len, i, key))
                return 1;
        }
        i++;
    }
}

/* The scan apart from its callers, so that a text the screen passes costs
 * them no more registers than the screen needs. */
__attribute__((noinline)) static int scan_text(const struct jr_prefilter *pf, const uint8_t *data, size_t len,
                                               size_t from, size_t upto) {
    return scan(pf, data, len, 0, from, upto);
}

__attribute__((noinline)) static int scan_key(const struct jr_prefilter *pf, const uint8_t *data, size_t len,
                                              size_t from, size_t upto) {
    return scan(pf, data, len, 1, from, upto);
}

/* The screen, then the scan where the screen cannot tell. */
static inline int suspect(const jr_ring *r, const uint8_t *data, size_t len, int key, size_t from, size_t upto) {
    const struct jr_prefilter *pf = __atomic_load_n(&r->pf, __ATOMIC_ACQUIRE);
    size_t at;
    if (!pf || len == 0 || screened_clean(pf, data, len, from, upto, &at))
        return 0;
    return key ? scan_key(pf, data, len, at, upto) : scan_text(pf, data, len, at, upto);
}

int jr_suspect(const jr_ring *r, const uint8_t *data, size_t len) {
    return suspect(r, data, len, 0, 0, len);
}

int jr_suspect_key(const jr_ring *r, const uint8_t *data, size_t len) {
    return suspect(r, data, len, 1, 0, len);
}

int jr_suspect_span(const jr_ring *r, const uint8_t *data, size_t len, size_t from, size_t upto) {
    if (from > upto || upto > len)
        return 1; /* not a span of data: nothing is vouched for */
    return suspect(r, data, len, 0, from, upto);
}

size_t jr_quiet_prefix(const jr_ring *r, const uint8_t *data, size_t len) {
    const struct jr_prefilter *pf = __atomic_load_n(&r->pf, __ATOMIC_ACQUIRE);
    if (!pf)
        return 0; /* rules set later are not known here: vouch for nothing */
    /* As the scan's tests, on bytes of data only: a clear pair starts
     * nothing; a set one whose byte is no digit, no "/" and starts no token
     * shorter than 3 starts a token only if its 3 bytes are some token's. */
    size_t i = 0;
    for (; i + 1 < len; i++) {
        if (!starts(pf->start, load_pair(data + i)))
            continue;
        if ((pf->byte[data[i]] & (PB_DIGIT | PB_SLASH | PB_SHORT)) || i + 2 >= len ||
            has_tri(pf->tri, tri_hash(lower(data[i]), lower(data[i + 1]), lower(data[i + 2]))))
            break;
    }
    return i;
}

int jr_prefilter_digit_reach(const jr_ring *r) {
    const struct jr_prefilter *pf = __atomic_load_n(&r->pf, __ATOMIC_ACQUIRE);
    return pf ? pf->digit_reach : JR_DIGIT_REACH_ANY;
}

/* The prefilter over a whole record as janus_utils.logger encodes it:
 * marshal version 2 (no references), a tuple whose fields are nested
 * containers of plain values.  Each string is checked on its own, as the C
 * encoder checks it; a dict key, and a string in a list or tuple of the
 * fields (a header pair's name, an argv option), as a key, so that "pin"
 * ends where its string ends.  An int inside a container below the top (a
 * field value, not the record's timestamp or pid) is checked with the card
 * rule.  Returns 1 suspect, 0
 * clean, -1 for bytes this does not read (a type it does not know, a
 * truncated value, nesting deeper than 64): the caller treats those as
 * suspect, and the Python redactor decides. */
#define SCAN_MAX_DEPTH 64

typedef struct {
    const jr_ring *ring;
    const uint8_t *p;
    const uint8_t *end;
} mscan;

static int take_u32(mscan *s, uint32_t *out) {
    if (s->end - s->p < 4)
        return -1;
    *out = (uint32_t)s->p[0] | (uint32_t)s->p[1] << 8 | (uint32_t)s->p[2] << 16 |
           (uint32_t)s->p[3] << 24;
    s->p += 4;
    return 0;
}

static int scan_value(mscan *s, int depth, int key) {
    if (s->p >= s->end || depth > SCAN_MAX_DEPTH)
        return -1;
    uint8_t type = *s->p++;
    uint32_t n;
    switch (type) {
    case 'N': case 'T': case 'F': case 'S': case '.': /* None, bools, StopIteration, Ellipsis */
        return 0;
    case 'i':
        if (s->end - s->p < 4)
            return -1;
        s->p += 4; /* 32 bits: too short for a card number */
        return 0;
    case 'g':
        if (s->end - s->p < 8)
            return -1;
        s->p += 8;
        return 0;
    case 'y':
        if (s->end - s->p < 16)
            return -1;
        s->p += 16;
        return 0;
    case 'l': { /* a signed count of 15-bit digits, least significant first */
        if (take_u32(s, &n))
            return -1;
        int32_t count = (int32_t)n;
        uint32_t ndig = count < 0 ? (uint32_t)0 - (uint32_t)count : (uint32_t)count;
        if ((size_t)(s->end - s->p) / 2 < ndig)
            return -1;
        if (depth >= 2 && count > 0 && ndig <= 5) {
            uint64_t v = 0;
            int fits = 1;
            for (uint32_t k = ndig; k-- > 0;) {
                uint64_t d = (uint64_t)s->p[2 * k] | (uint64_t)(s->p[2 * k + 1] & 0x7f) << 8;
                if (v >> 49) { /* another 15 bits would pass 64: beyond any card */
                    fits = 0;
                    break;
                }
                v = v << 15 | d;
            }
            if (fits && jr_card_number(v))
                return 1;
        }
        s->p += 2 * (size_t)ndig;
        return 0;
    }
    case 'u': case 't': case 's': /* str (UTF-8), an interned str, bytes */
        if (take_u32(s, &n) || (size_t)(s->end - s->p) < n)
            return -1;
        if (suspect(s->ring, s->p, n, key, 0, n))
            return 1;
        s->p += n;
        return 0;
    case '(': case '[': case '<': case '>': /* tuple, list, set, frozenset */
        if (take_u32(s, &n))
            return -1;
        for (uint32_t k = 0; k < n; k++) {
            int rc = scan_value(s, depth + 1, depth >= 1);
            if (rc)
                return rc;
        }
        return 0;
    case '{': /* key, value, ... then '0' */
        for (;;) {
            if (s->p >= s->end)
                return -1;
            if (*s->p == '0') {
                s->p++;
                return 0;
            }
            int rc = scan_value(s, depth + 1, 1);
            if (!rc)
                rc = scan_value(s, depth + 1, 0);
            if (rc)
                return rc;
        }
    default:
        return -1;
    }
}

int jr_suspect_record(const jr_ring *r, const uint8_t *data, size_t len) {
    if (!__atomic_load_n(&r->pf, __ATOMIC_ACQUIRE))
        return 0;
    mscan s = {r, data, data + len};
    int rc = scan_value(&s, 0, 0);
    return rc != 0 || s.p != s.end;
}

int jr_push_record_checked(jr_ring *r, const uint8_t *data, size_t len) {
    if (jr_suspect_record(r, data, len))
        return JR_SUSPECT;
    return jr_push_ex(r, data, len, __atomic_load_n(&r->policy, __ATOMIC_RELAXED),
                      __atomic_load_n(&r->block_timeout_ns, __ATOMIC_RELAXED));
}

/* ------------------------------------------------------------------------ */
/* the consumer: one at a time                                               */

void jr_set_torn_timeout(jr_ring *r, int64_t ns) { r->torn_timeout_ns = ns; }

/* Give up on the space from `from` on, up to the first record some producer
 * has claimed (or the head seen when the consumer began to wait): every FREE
 * unit on the way becomes SKIP, so a producer whose unclaimed reservation
 * starts there can never write into it (see the file comment).  Returns the
 * position of that first claimed record, or the head seen. */
static uint64_t skip_unclaimed(jr_ring *r, uint64_t from) {
    for (uint64_t p = from; p < r->stall_head; p += JR_ALIGN) {
        uint64_t *tp = &rec_at(r, p)->tag;
        uint64_t t = __atomic_load_n(tp, __ATOMIC_ACQUIRE);
        if ((t == (p ^ TAG_FREE) || t == 0) &&
            __atomic_compare_exchange_n(tp, &t, p ^ TAG_SKIP, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        /* t is what is there now (a failed CAS reloads it) */
        if (t == (p ^ TAG_DONE) || t == (p ^ TAG_RESV) || is_claim(t, p))
            return p;
        /* p ^ TAG_SKIP, or the bytes of a damaged record: go on */
    }
    return r->stall_head;
}

/* A record at pos of this length ends inside the data area and before limit. */
static inline int len_fits(const jr_ring *r, uint64_t pos, uint32_t len, uint64_t limit) {
    return len <= r->cap - JR_REC_HEADER - (pos & r->mask) &&
           pos + align_up(JR_REC_HEADER + (uint64_t)len) <= limit;
}

/* A zombie has exited: it will never write again.  Unknown (no /proc): no. */
static int pid_is_zombie(pid_t pid) {
    char name[64], buf[512];
    snprintf(name, sizeof name, "/proc/%d/stat", (int)pid);
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end = strrchr(buf, ')'); /* the command name may hold anything */
    return end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X');
}

/* Is the producer that reserved this record still running?  A live producer
 * is only slow (descheduled, stopped, throttled): skipping its record would
 * lose it and let its late write land on whoever reuses the space.  So when
 * in doubt (the lock cannot be queried) the answer is "alive": a record is
 * skipped only once its producer provably cannot write into it any more.
 *
 * With a slot, the producer lives while its lock is held: the kernel drops
 * it when the last descriptor of that open file description closes, i.e. as
 * the process exits (a zombie holds no locks), whatever PID namespace either
 * side is in.  With only a pid, kill() answers for this PID namespace, which
 * is the producer's wherever slots are missing for want of /proc. */
static int producer_alive(const jr_ring *r, uint32_t flags) {
    if (flags & FLAG_SLOT) {
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = LIVE_BASE + (off_t)((flags & ~FLAG_SLOT) >> FLAG_PID_SHIFT);
        fl.l_len = 1;
        /* r->fd's description holds no lock, so any holder shows, this
         * process's own liveness descriptor included. */
        if (fcntl(r->fd, F_OFD_GETLK, &fl) != 0)
            return 1;
        return fl.l_type != F_UNLCK;
    }
    pid_t pid = (pid_t)(flags >> FLAG_PID_SHIFT);
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno != EPERM)
        return 0;
    return !pid_is_zombie(pid);
}

/* Where the record after the uncommitted one at pos starts, or pos itself if
 * it must be waited for.  The rule: never skip space a producer may still
 * write into.
 *   RESV: the length says where it ends (*one = 1: exactly one record is
 *     lost); skipped once its owner is gone.
 *   CLAIM: its owner wrote nothing past the claim; skipped once it is gone.
 *   FREE (reserved, never claimed, for the whole timeout): its producer,
 *     stopped or dead, is unknown, so the space is taken from it instead:
 *     FREE becomes SKIP, and a producer that resumes loses its claim and
 *     pushes again (so what count_lost counts there may come back).  What
 *     follows, up to the first claimed record, gets the same treatment (it
 *     may be the rest of this reservation, or others' reservations that also
 *     went unclaimed for the whole timeout). */
static uint64_t skip_torn(jr_ring *r, uint64_t pos, int *one) {
    struct jr_rec *h = rec_at(r, pos);
    uint64_t tag = __atomic_load_n(&h->tag, __ATOMIC_ACQUIRE);
    *one = 0;
    if (tag == (pos ^ TAG_RESV) && len_fits(r, pos, h->len, r->stall_head)) {
        if (producer_alive(r, h->flags))
            return pos;
        *one = 1;
        return pos + align_up(JR_REC_HEADER + h->len);
    }
    if (is_claim(tag, pos)) {
        if (producer_alive(r, (uint32_t)tag))
            return pos;
        return skip_unclaimed(r, pos + JR_ALIGN);
    }
    if (tag == (pos ^ TAG_FREE) || tag == 0) {
        if (!__atomic_compare_exchange_n(&h->tag, &tag, pos ^ TAG_SKIP, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            return pos; /* claimed this instant: look again */
        return skip_unclaimed(r, pos + JR_ALIGN);
    }
    return skip_unclaimed(r, pos + JR_ALIGN); /* a damaged header */
}

/* Count the records lost in [from, to), skipped by the consumer.  With one
 * set a RESV header said it was a single record.  Otherwise the headers in
 * it are gone (damage, or a producer killed before writing its header): the
 * count is an estimate, the bytes over the average size of the records this
 * consumer has read (or of the record after the gap when it has read none),
 * and at least 1.  torn_bytes is exact either way. */
static void count_lost(jr_ring *r, uint64_t from, uint64_t to, int one) {
    uint64_t bytes = to - from, lost = 1;
    if (!one) {
        uint64_t avg = r->seen_records ? r->seen_bytes / r->seen_records : 0;
        if (avg == 0 && to < r->stall_head) {
            struct jr_rec *h = rec_at(r, to);
            if (len_fits(r, to, h->len, r->stall_head))
                avg = align_up(JR_REC_HEADER + (uint64_t)h->len);
        }
        if (avg != 0 && (bytes + avg / 2) / avg > 1)
            lost = (bytes + avg / 2) / avg;
    }
    /* Relaxed: statistics, ordered with nothing else. */
    __atomic_fetch_add(&r->sh->torn, lost, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->sh->torn_bytes, bytes, __ATOMIC_RELAXED);
}

int64_t jr_read(jr_ring *r, uint8_t *out, size_t out_cap, size_t max_records, size_t *used,
                uint64_t *next_pos) {
    uint64_t pos = r->rpos;
    /* Tail first: head only grows, so head >= tail however the two loads
     * interleave with a release.  Acquire pairs with the producers' CAS only
     * for the value of head; each record's own tag, loaded with acquire, is
     * what orders its bytes. */
    uint64_t tail = __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&r->sh->head, __ATOMIC_ACQUIRE);
    *used = 0;
    *next_pos = pos;
    if (pos < tail || __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE) != tail)
        return JR_MOVED; /* only a second consumer moves the tail under us */
    if (!cursors_sane(r, tail, head, pos))
        return JR_CORRUPT;
    size_t off = 0;
    int64_t n = 0;
    while (pos < head && (size_t)n < max_records) {
        struct jr_rec *h = rec_at(r, pos);
        uint64_t tag = __atomic_load_n(&h->tag, __ATOMIC_ACQUIRE);
        if (tag == (pos ^ TAG_SKIP)) {
            pos += JR_ALIGN; /* given up on earlier (before a rewind or takeover) */
            continue;
        }
        if (tag == (pos ^ TAG_DONE)) {
            uint32_t len = h->len;
            if (!len_fits(r, pos, len, head)) {
                /* A committed header with an impossible length: only a
                 * damaged file does that.  Skip it like a torn record. */
                r->stall_head = head;
                uint64_t next = skip_unclaimed(r, pos + JR_ALIGN);
                count_lost(r, pos, next, 0);
                pos = next;
                continue;
            }
            if (!(h->flags & FLAG_PAD)) {
                if (off + 16 + len > out_cap) {
                    if (n == 0) {
                        *used = 16 + (size_t)len;
                        return JR_BUFFER_SMALL;
                    }
                    break;
                }
                uint64_t seq = pos;
                uint32_t zero = 0;
                memcpy(out + off, &seq, 8);
                memcpy(out + off + 8, &len, 4);
                memcpy(out + off + 12, &zero, 4);
                memcpy(out + off + 16, h + 1, len);
                off += 16 + (size_t)len;
                n++;
                r->seen_bytes += align_up(JR_REC_HEADER + len);
                r->seen_records++;
            }
            pos += align_up(JR_REC_HEADER + len);
            r->stall_pos = UINT64_MAX;
            continue;
        }
        /* Not committed yet: a producer is writing it, or died doing so. */
        int64_t now = now_ns();
        if (r->stall_pos != pos) {
            r->stall_pos = pos;
            r->stall_head = head;
            r->stall_since_ns = now;
            break;
        }
        if (now - r->stall_since_ns < r->torn_timeout_ns)
            break;
        int one;
        uint64_t next = skip_torn(r, pos, &one);
        if (next == pos) {
            /* Its producer lives: wait again, from now. */
            r->stall_since_ns = now;
            break;
        }
        count_lost(r, pos, next, one);
        pos = next;
        r->stall_pos = UINT64_MAX;
    }
    r->rpos = pos;
    *used = off;
    *next_pos = pos;
    return n;
}

/* Only one consumer at a time may zero and give back space: a second one that
 * checked the tail and was then stopped (SIGSTOP) would, on resuming, zero
 * records producers wrote meanwhile and move the tail backwards.  The lock
 * is an OFD lock on this process's own description, so a holder that dies
 * frees it, and one that is stopped keeps it until it resumes (the other
 * consumer gets JR_BUSY and no space is released in between). */
static int release_lock(const jr_ring *r, short type) {
    if (r->live_fd < 0)
        return 0; /* no OFD locks: one consumer, as the election promises */
    if (ofd_lock(r->live_fd, type, RELEASE_LOCK, F_OFD_SETLK) == 0)
        return 0;
    return (errno == EAGAIN || errno == EACCES) ? JR_BUSY : 0;
}

static int release_locked(jr_ring *r, uint64_t upto, int *moved) {
    struct jr_shared *sh = r->sh;
    /* Under the release lock nobody else moves the tail. */
    uint64_t tail = __atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&sh->head, __ATOMIC_ACQUIRE);
    if (!cursors_sane(r, tail, head, tail))
        return JR_CORRUPT;
    if (upto < tail)
        return JR_MOVED;
    if (upto > head || (upto % JR_ALIGN))
        return JR_INVALID;
    /* Rewrite what we give back as FREE headers of the next lap (see the file
     * comment), so no byte of this lap can pass for a header in the next one.
     * The range is ours until the tail moves past it, and at most cap bytes
     * long (checked above).  Relaxed: the release store of the tail below
     * publishes them. */
    for (uint64_t p = tail; p < upto; p += JR_ALIGN) {
        struct jr_rec *h = rec_at(r, p);
        h->len = 0;
        h->flags = 0;
        __atomic_store_n(&h->tag, (p + r->cap) ^ TAG_FREE, __ATOMIC_RELAXED);
    }
    /* Release: our reads and the zeroing happen before producers reuse it. */
    __atomic_store_n(&sh->tail, upto, __ATOMIC_RELEASE);
    *moved = upto != tail;
    if (r->rpos < upto)
        r->rpos = upto;
    return JR_OK;
}

int jr_release(jr_ring *r, uint64_t upto) {
    int rc = release_lock(r, F_WRLCK);
    if (rc != JR_OK)
        return rc;
    int moved = 0;
    rc = release_locked(r, upto, &moved);
    release_lock(r, F_UNLCK);
    /* The waiters are woken once the lock is given back: one of them may be
     * flush(), whose process can then be stopped (SIGSTOP) or forked at
     * once, and a lock kept by a stopped process would make every later
     * consumer's release fail as if another consumer were releasing. */
    if (moved)
        wake_room(r);
    return rc;
}

void jr_rewind(jr_ring *r) {
    r->rpos = __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE);
    r->stall_pos = UINT64_MAX;
}

void jr_get_stats(const jr_ring *r, jr_stats *out) {
    const struct jr_shared *sh = r->sh;
    out->capacity = r->cap;
    out->head = __atomic_load_n(&sh->head, __ATOMIC_ACQUIRE);
    out->tail = __atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE);
    out->read_pos = r->rpos;
    out->dropped = __atomic_load_n(&sh->dropped, __ATOMIC_RELAXED);
    out->torn = __atomic_load_n(&sh->torn, __ATOMIC_RELAXED);
    out->torn_bytes = __atomic_load_n(&sh->torn_bytes, __ATOMIC_RELAXED);
    out->high_water = __atomic_load_n(&sh->high_water, __ATOMIC_RELAXED);
    out->ring_id = sh->ring_id;
    out->leader = __atomic_load_n(&sh->leader, __ATOMIC_ACQUIRE);
    out->beat = __atomic_load_n(&sh->beat, __ATOMIC_RELAXED);
    out->full_waits = __atomic_load_n(&sh->full_waits, __ATOMIC_RELAXED);
    out->full_wait_ns = __atomic_load_n(&sh->full_wait_ns, __ATOMIC_RELAXED);
    out->full_wait_max_ns = __atomic_load_n(&sh->full_wait_max_ns, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------ */
/* the consumer's wait between commits                                       */

/* How often a waiting consumer looks at the ring's fill: a wake ends the
 * wait at once, a filling ring within this. */
#define CONSUMER_LOOK_NS 10000000LL

int jr_wait_consumer(jr_ring *r, uint64_t min_used, int64_t timeout_ns) {
    int64_t end = now_ns() + timeout_ns;
    struct jr_shared *sh = r->sh;
    for (;;) {
        /* Acquire: what the waker did before jr_wake_consumer is seen after. */
        uint32_t seq = __atomic_load_n(&sh->wake_seq, __ATOMIC_ACQUIRE);
        if (seq != r->wake_seen) {
            r->wake_seen = seq;
            return JR_WAIT_WOKEN;
        }
        /* The tail first: the head read after it is never behind it. */
        uint64_t tail = __atomic_load_n(&r->sh->tail, __ATOMIC_ACQUIRE);
        uint64_t head = __atomic_load_n(&r->sh->head, __ATOMIC_RELAXED);
        if (head - tail >= min_used)
            return JR_WAIT_FILLED;
        int64_t left = end - now_ns();
        if (left <= 0)
            return JR_WAIT_TIMEOUT;
        int64_t step = left < CONSUMER_LOOK_NS ? left : CONSUMER_LOOK_NS;
#ifdef __linux__
        /* Sleeps unless a wake came since the load above (the word moved). */
        struct timespec ts = {(time_t)(step / 1000000000LL), (long)(step % 1000000000LL)};
        futex(&sh->wake_seq, FUTEX_WAIT, seq, &ts);
#else
        struct timespec ts = {0, (long)step}; /* step <= CONSUMER_LOOK_NS, under a second */
        nanosleep(&ts, NULL);
#endif
    }
}

/* The word is in the shared header: flush() in any process that shares
 * the ring wakes the consumer, a thread here or a flusher process. */
void jr_wake_consumer(jr_ring *r) {
    __atomic_fetch_add(&r->sh->wake_seq, 1, __ATOMIC_RELEASE);
#ifdef __linux__
    futex(&r->sh->wake_seq, FUTEX_WAKE, INT_MAX, NULL);
#endif
}

/* Wait until the tail reaches `target` (every record up to there released)
 * or `timeout_ns` pass: 1 if it did, 0 if not.  flush() waits here, as a
 * producer waits for room: counted in room_waiters, woken by wake_room on
 * the release that moves the tail.  Each sleep is capped at
 * CONSUMER_LOOK_NS, so a consumer that does not wake (an older build)
 * delays it by that much at most. */
int jr_wait_tail(jr_ring *r, uint64_t target, int64_t timeout_ns) {
    struct jr_shared *sh = r->sh;
    if (__atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE) >= target)
        return 1;
    int64_t end = now_ns() + timeout_ns;
    int done = 0;
#ifdef __linux__
    __atomic_fetch_add(&sh->room_waiters, 1, __ATOMIC_SEQ_CST);
#endif
    for (;;) {
#ifdef __linux__
        /* room_seq before the tail, as in wait_for_room: a release in between
         * moves the word and the FUTEX_WAIT below returns at once. */
        uint32_t seq = __atomic_load_n(&sh->room_seq, __ATOMIC_ACQUIRE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
        if (__atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE) >= target) {
            done = 1;
            break;
        }
        int64_t left = end - now_ns();
        if (left <= 0)
            break;
        int64_t step = left < CONSUMER_LOOK_NS ? left : CONSUMER_LOOK_NS;
        struct timespec ts = {(time_t)(step / 1000000000LL), (long)(step % 1000000000LL)};
#ifdef __linux__
        futex(&sh->room_seq, FUTEX_WAIT, seq, &ts);
#else
        nanosleep(&ts, NULL);
#endif
    }
#ifdef __linux__
    __atomic_fetch_sub(&sh->room_waiters, 1, __ATOMIC_RELAXED);
#endif
    return done;
}

/* ------------------------------------------------------------------------ */
/* the consumer's election: any thread, any process                          */

int jr_claim(jr_ring *r, uint64_t expected, uint64_t token) {
    /* Acq_rel: a consumer that claims the ring sees everything the one before
     * it did up to its own claim of it. */
    if (!__atomic_compare_exchange_n(&r->sh->leader, &expected, token, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return 0;
    __atomic_fetch_add(&r->sh->beat, 1, __ATOMIC_RELAXED);
    return 1;
}

int jr_beat(jr_ring *r, uint64_t token) {
    if (__atomic_load_n(&r->sh->leader, __ATOMIC_ACQUIRE) != token)
        return 0;
    /* Relaxed: the beat orders nothing, watchers only see whether it moves. */
    __atomic_fetch_add(&r->sh->beat, 1, __ATOMIC_RELAXED);
    return 1;
}
