/*
 * Generates text from a prompt with ember's C API, streaming it to stdout.
 *
 *   generate MODEL.gguf [PROMPT] [MAX_TOKENS] [TEMPERATURE]
 *
 * Build against an installed ember:
 *   cc generate.c $(pkg-config --cflags --libs ember) -o generate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ember.h>

static bool print_piece(const char *piece, size_t len, void *user) {
    (void)user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static int fail(const char *what, ember_status st) {
    fprintf(stderr, "%s: %s: %s\n", what, ember_status_name(st), ember_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path, *prompt;
    ember_model *model = NULL;
    ember_context *ctx = NULL;
    ember_sampler *sampler = NULL;
    ember_model_params mp;
    ember_context_params cp;
    ember_sampler_params sp;
    ember_generate_params gp;
    ember_generate_result result;
    ember_status st;
    int rc = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT] [MAX_TOKENS] [TEMPERATURE]\n", argv[0]);
        return 2;
    }
    path = argv[1];
    prompt = argc > 2 ? argv[2] : "The capital of France is";

    ember_model_params_default(&mp, sizeof mp);
    st = ember_model_load(path, &mp, &model);
    if (st != EMBER_OK) return fail("loading the model", st);

    ember_context_params_default(&cp, sizeof cp);
    cp.n_ctx = 2048;
    st = ember_context_new(model, &cp, &ctx);
    if (st != EMBER_OK) {
        fail("creating a context", st);
        goto out;
    }

    ember_sampler_params_default(&sp, sizeof sp);
    if (argc > 4) sp.temperature = (float)atof(argv[4]);
    st = ember_sampler_new(model, &sp, &sampler);
    if (st != EMBER_OK) {
        fail("creating a sampler", st);
        goto out;
    }

    ember_generate_params_default(&gp, sizeof gp);
    gp.max_tokens = argc > 3 ? (uint32_t)atoi(argv[3]) : 64;
    memset(&result, 0, sizeof result);
    result.struct_size = sizeof result;

    fputs(prompt, stdout);
    st = ember_generate(ctx, sampler, prompt, strlen(prompt), &gp, print_piece, NULL, &result);
    putchar('\n');
    if (st != EMBER_OK) {
        fail("generating", st);
        goto out;
    }
    fprintf(stderr, "[ember %s: %u prompt tokens in %.0f ms, %u generated in %.0f ms]\n",
            ember_version(), result.prompt_tokens, result.prompt_ms, result.generated_tokens,
            result.generate_ms);
    rc = 0;
out:
    ember_sampler_free(sampler);
    ember_context_free(ctx);
    ember_model_free(model);
    return rc;
}
