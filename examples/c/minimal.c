/* The smallest complete ember program in C: load a model, stream 32 greedy tokens.
 *
 *   cc minimal.c $(pkg-config --cflags --libs ember) -o minimal
 *   ./minimal SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is"
 */
#include <stdio.h>
#include <string.h>

#include <ember.h>

static bool print_piece(const char *piece, size_t len, void *user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout); /* whole UTF-8 characters, not NUL-terminated here */
    return true;                   /* false would stop the generation */
}

int main(int argc, char **argv) {
    const char *prompt = argc > 2 ? argv[2] : "The capital of France is";
    ember_model *model = NULL;
    ember_context *ctx = NULL;
    ember_sampler *sampler = NULL;
    ember_sampler_params sp;
    ember_generate_params gp;
    ember_status st;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT]\n", argv[0]);
        return 2;
    }
    ember_sampler_params_default(&sp, sizeof sp);
    sp.temperature = 0.0f; /* greedy: the most likely token every time */
    ember_generate_params_default(&gp, sizeof gp);
    gp.max_tokens = 32;

    st = ember_model_load(argv[1], NULL, &model); /* NULL params: the defaults */
    if (st == EMBER_OK) st = ember_context_new(model, NULL, &ctx);
    if (st == EMBER_OK) st = ember_sampler_new(model, &sp, &sampler);
    if (st == EMBER_OK)
        st = ember_generate(ctx, sampler, prompt, strlen(prompt), &gp, print_piece, NULL, NULL);
    printf("\n");
    if (st != EMBER_OK) fprintf(stderr, "ember: %s: %s\n", ember_status_name(st), ember_last_error());

    ember_sampler_free(sampler); /* each free accepts NULL */
    ember_context_free(ctx);
    ember_model_free(model);
    return st == EMBER_OK ? 0 : 1;
}
