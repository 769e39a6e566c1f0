/* tokenize-oracle: prints llama.cpp's tokenization and detokenization of each input record.
 * Built and run by tools/make-tokenizer-fixtures; never committed as a binary.
 *
 * usage: tokenize-oracle MODEL.gguf < records > results
 * records: "<byte length>\n<bytes>" repeated.
 * results: a header ("vocab ..." lines), then per record:
 *   T0 <ids>   llama_tokenize(add_special=true, parse_special=false)
 *   T1 <ids>   llama_tokenize(add_special=true, parse_special=true)
 *   D0 <hex>   llama_detokenize(T0, remove_special=false, unparse_special=false)
 *   D1 <hex>   llama_detokenize(T1, remove_special=false, unparse_special=true)
 *   D2 <hex>   llama_detokenize(T1, remove_special=true,  unparse_special=true)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)level; (void)text; (void)ud;
}

static void print_ids(const char *tag, const llama_token *ids, int n) {
    printf("%s ", tag);
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("\n");
}

static void print_hex(const char *tag, const char *s, int n) {
    printf("%s ", tag);
    for (int i = 0; i < n; i++) printf("%02x", (unsigned char)s[i]);
    printf("\n");
}

static int tokenize(const struct llama_vocab *v, const char *s, int n, int parse, llama_token **out) {
    int cap = n + 16;
    *out = malloc(sizeof(llama_token) * cap);
    int r = llama_tokenize(v, s, n, *out, cap, true, parse);
    if (r < 0) {
        cap = -r;
        *out = realloc(*out, sizeof(llama_token) * cap);
        r = llama_tokenize(v, s, n, *out, cap, true, parse);
    }
    if (r < 0) { fprintf(stderr, "tokenize failed\n"); exit(1); }
    return r;
}

static void detok(const char *tag, const struct llama_vocab *v, const llama_token *ids, int n, int rm, int unparse) {
    int cap = n * 64 + 64;
    char *buf = malloc(cap);
    int r = llama_detokenize(v, ids, n, buf, cap, rm, unparse);
    if (r < 0) {
        cap = -r;
        buf = realloc(buf, cap);
        r = llama_detokenize(v, ids, n, buf, cap, rm, unparse);
    }
    if (r < 0) { fprintf(stderr, "detokenize failed\n"); exit(1); }
    print_hex(tag, buf, r);
    free(buf);
}

/* FNV-1a over every token's rendering, so a fixture can pin 262k pieces in 16 hex digits. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s MODEL < records\n", argv[0]); return 2; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const struct llama_vocab *v = llama_model_get_vocab(model);
    int nv = llama_vocab_n_tokens(v);
    printf("vocab n_vocab %d bos %d eos %d eot %d add_bos %d add_eos %d\n", nv, llama_vocab_bos(v),
           llama_vocab_eos(v), llama_vocab_eot(v), llama_vocab_get_add_bos(v), llama_vocab_get_add_eos(v));
    printf("eog");
    for (int t = 0; t < nv; t++) if (llama_vocab_is_eog(v, t)) printf(" %d", t);
    printf("\n");
    uint64_t h_attr = 0xcbf29ce484222325ULL, h_sp = h_attr, h_plain = h_attr;
    char piece[4096];
    for (int t = 0; t < nv; t++) {
        uint32_t a = (uint32_t)llama_vocab_get_attr(v, t);
        h_attr = fnv(h_attr, &a, 4);
        int32_t n = llama_token_to_piece(v, t, piece, sizeof piece, 0, true);
        if (n < 0) { fprintf(stderr, "piece too long\n"); return 1; }
        h_sp = fnv(h_sp, &n, 4);
        h_sp = fnv(h_sp, piece, n);
        n = llama_token_to_piece(v, t, piece, sizeof piece, 0, false);
        h_plain = fnv(h_plain, &n, 4);
        h_plain = fnv(h_plain, piece, n);
    }
    printf("hashes attr %016llx piece_special %016llx piece_plain %016llx\n", (unsigned long long)h_attr,
           (unsigned long long)h_sp, (unsigned long long)h_plain);

    size_t len;
    while (scanf("%zu", &len) == 1) {
        if (getchar() != '\n') { fprintf(stderr, "bad record\n"); return 1; }
        char *s = malloc(len + 1);
        if (fread(s, 1, len, stdin) != len) { fprintf(stderr, "short record\n"); return 1; }
        s[len] = 0;
        llama_token *t0, *t1;
        int n0 = tokenize(v, s, (int)len, 0, &t0);
        int n1 = tokenize(v, s, (int)len, 1, &t1);
        print_ids("T0", t0, n0);
        print_ids("T1", t1, n1);
        detok("D0", v, t0, n0, 0, 0);
        detok("D1", v, t1, n1, 0, 1);
        detok("D2", v, t1, n1, 1, 1);
        free(t0); free(t1); free(s);
    }
    llama_model_free(model);
    return 0;
}
