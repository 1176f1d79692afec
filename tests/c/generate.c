/*
 * Drives the kinglet C API the way an embedder would: reads a .klt file,
 * checks it, sizes an arena, starts a session and streams generated text to
 * stdout. A mode argument exercises one error path instead, printing
 * "error <code>: <message>" and exiting 2, so a test can compare the text.
 *
 *   generate MODEL PROMPT TOKENS TEMPERATURE SEED [MODE]
 *
 * MODE: run (default) | misaligned (arena at an odd address) | stop-after-3
 *       | null-model | short-arena | bad-utf8 | truncated | max-seq-0
 *       | null-emit | bad-temperature
 *       | run-n (kinglet_generate_n with strlen(PROMPT))
 *       | run-n-nul (kinglet_generate_n with PROMPT, a NUL byte and PROMPT)
 *       | empty-n (kinglet_generate_n with NULL and 0)
 *       | null-n (kinglet_generate_n with NULL and 5)
 *       | no-nul (kinglet_generate with 4*max_seq + 1 bytes and no NUL,
 *         followed by an unreadable page)
 *       | long-n (kinglet_generate_n with a length of SIZE_MAX at one
 *         readable byte followed by an unreadable page)
 *       | skip-check (no kinglet_check first: the session and generation
 *         meet the model's problems themselves)
 */
#define _DEFAULT_SOURCE /* mmap */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kinglet.h"

static int print_piece(const char *piece, size_t len, void *user) {
    (void)user;
    return fwrite(piece, 1, len, stdout) == len ? 0 : 1;
}

/* Prints pieces and stops after the third one. */
static int print_three(const char *piece, size_t len, void *user) {
    int *count = (int *)user;
    fwrite(piece, 1, len, stdout);
    *count += 1;
    return *count >= 3;
}

/* `len` bytes of 'a' ending right before a page that cannot be read, so
 * reading one byte past them faults. */
static char *before_guard_page(size_t len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + page - 1) / page + 1;
    char *base = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    char *guard = base + (pages - 1) * page;
    if (mprotect(guard, page, PROT_NONE) != 0) return NULL;
    memset(guard - len, 'a', len);
    return guard - len;
}

static int fail(int code) {
    printf("error %d: %s\n", code, kinglet_strerror(code));
    return 2;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n))) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL PROMPT TOKENS TEMPERATURE SEED [MODE]\n", argv[0]);
        return 1;
    }
    const char *mode = argc > 6 ? argv[6] : "run";
    const char *prompt = argv[2];
    unsigned new_tokens = (unsigned)strtoul(argv[3], NULL, 10);
    float temperature = strtof(argv[4], NULL);
    uint64_t seed = strtoull(argv[5], NULL, 10);

    size_t len = 0;
    unsigned char *model = read_file(argv[1], &len);
    if (!model) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    if (!strcmp(mode, "null-model")) return fail(kinglet_check(NULL, len));
    if (!strcmp(mode, "truncated")) len /= 2;

    int rc = strcmp(mode, "skip-check") ? kinglet_check(model, len) : KINGLET_OK;
    if (rc != KINGLET_OK) return fail(rc);

    uint32_t max_seq = kinglet_model_max_seq(model, len);
    if (!strcmp(mode, "max-seq-0")) max_seq = 0;
    size_t need = kinglet_session_bytes(model, len, max_seq);
    if (need == 0 && max_seq != 0) return fail(KINGLET_E_INTERNAL);
    /* One spare byte so the misaligned mode can start the arena at +1. */
    unsigned char *block = malloc(need + 1);
    if (!block) return 1;
    void *arena = block;
    size_t arena_len = need;
    if (!strcmp(mode, "misaligned")) arena = block + 1;
    if (!strcmp(mode, "short-arena")) arena_len = need - 1;
    if (!strcmp(mode, "max-seq-0")) arena_len = 1 << 20;

    kinglet_session *s = NULL;
    rc = kinglet_session_init(arena, arena_len, model, len, max_seq, &s);
    if (rc != KINGLET_OK) return fail(rc);

    kinglet_emit_fn emit = print_piece;
    void *user = NULL;
    int pieces = 0;
    if (!strcmp(mode, "bad-utf8")) prompt = "Once \xff\xfe upon";
    if (!strcmp(mode, "null-emit")) emit = NULL;
    if (!strcmp(mode, "bad-temperature")) temperature = NAN;
    if (!strcmp(mode, "stop-after-3")) {
        emit = print_three;
        user = &pieces;
    }
    if (!strcmp(mode, "run-n")) {
        rc = kinglet_generate_n(s, prompt, strlen(prompt), new_tokens, temperature, seed, emit, user);
    } else if (!strcmp(mode, "run-n-nul")) {
        size_t n = strlen(prompt);
        char *twice = malloc(2 * n + 1);
        if (!twice) return 1;
        memcpy(twice, prompt, n);
        twice[n] = '\0';
        memcpy(twice + n + 1, prompt, n);
        rc = kinglet_generate_n(s, twice, 2 * n + 1, new_tokens, temperature, seed, emit, user);
        free(twice);
    } else if (!strcmp(mode, "empty-n")) {
        rc = kinglet_generate_n(s, NULL, 0, new_tokens, temperature, seed, emit, user);
    } else if (!strcmp(mode, "null-n")) {
        rc = kinglet_generate_n(s, NULL, 5, new_tokens, temperature, seed, emit, user);
    } else if (!strcmp(mode, "no-nul")) {
        const char *unterminated = before_guard_page(4 * (size_t)max_seq + 1);
        if (!unterminated) return 1;
        rc = kinglet_generate(s, unterminated, new_tokens, temperature, seed, emit, user);
    } else if (!strcmp(mode, "long-n")) {
        const char *one = before_guard_page(1);
        if (!one) return 1;
        rc = kinglet_generate_n(s, one, SIZE_MAX, new_tokens, temperature, seed, emit, user);
    } else {
        rc = kinglet_generate(s, prompt, new_tokens, temperature, seed, emit, user);
    }
    if (rc < 0) return fail(rc);
    fflush(stdout);
    fprintf(stderr, "kinglet %s: %d tokens sampled, arena %zu bytes\n", kinglet_version(), rc, need);
    free(block);
    free(model);
    return 0;
}
