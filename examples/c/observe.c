/* Watch a model's forward pass from C: an observer set on the context is shown each
 * stage of every decode. This one prints the residual stream's norm after each layer,
 * where one attention head of the last layer looks from the last token, and the top
 * next token, which is the same token ember_context_logits() gives.
 *
 *   cc observe.c $(pkg-config --cflags --libs ember) -lm -o observe
 *   ./observe SmolLM2-135M-Instruct.Q4_1.gguf "The cat sat on the mat. The cat sat on the"
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <ember.h>

typedef struct {
    int32_t n_layer;
    uint32_t last_pos;  /* position of the prompt's last token */
    uint32_t top_token; /* argmax of the logits the observer saw */
} watch;

static bool wants_attention(uint32_t layer, uint32_t head, void *user_data) {
    const watch *w = user_data;
    return (int32_t)layer == w->n_layer - 1 && head == 0; /* only this head is computed */
}

static void observe(const ember_view *v, void *user_data) {
    watch *w = user_data;
    size_t width = v->rows ? v->n_data / v->rows : 0, i;
    if (v->stage == EMBER_STAGE_RESIDUAL) {
        const float *row = v->data + (size_t)(w->last_pos - v->pos0) * width;
        double s = 0;
        for (i = 0; i < width; i++) s += (double)row[i] * row[i];
        printf("layer %2d: |residual| = %8.2f\n", v->layer, sqrt(s));
    } else if (v->stage == EMBER_STAGE_ATTN_WEIGHTS && v->pos0 == w->last_pos) {
        size_t best = 0;
        for (i = 1; i < v->n_data; i++)
            if (v->data[i] > v->data[best]) best = i;
        printf("layer %d head %d: the last token attends most to position %zu (weight %.2f)\n",
               v->layer, v->head, v->pos0 + 1 - v->n_data + best, v->data[best]);
    } else if (v->stage == EMBER_STAGE_LOGITS) {
        size_t best = 0;
        for (i = 1; i < v->n_data; i++)
            if (v->data[i] > v->data[best]) best = i;
        w->top_token = (uint32_t)best;
    }
}

int main(int argc, char **argv) {
    const char *prompt = argc > 2 ? argv[2] : "The cat sat on the mat. The cat sat on the";
    ember_model *model = NULL;
    ember_context *ctx = NULL;
    ember_model_info info;
    ember_observer obs = {0};
    watch w = {0, 0, 0};
    ember_token tokens[256];
    size_t n = 0, n_logits = 0, i, best = 0, needed = 0;
    const float *logits = NULL;
    char piece[64];
    ember_status st;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT]\n", argv[0]);
        return 2;
    }
    info.struct_size = sizeof info;
    obs.struct_size = sizeof obs;
    obs.observe = observe;
    obs.wants_attention = wants_attention;
    obs.user_data = &w;

    st = ember_model_load(argv[1], NULL, &model);
    if (st == EMBER_OK) st = ember_model_get_info(model, &info);
    if (st == EMBER_OK) st = ember_context_new(model, NULL, &ctx);
    if (st == EMBER_OK)
        st = ember_tokenize(model, prompt, strlen(prompt), true, false, tokens, 256, &n);
    if (st == EMBER_OK && n > 0) {
        w.n_layer = (int32_t)info.n_layer;
        w.last_pos = (uint32_t)(n - 1);
        st = ember_context_set_observer(ctx, &obs);
    }
    if (st == EMBER_OK) st = ember_decode(ctx, tokens, n);
    if (st == EMBER_OK) st = ember_context_set_observer(ctx, NULL); /* off again: free */
    if (st == EMBER_OK) st = ember_context_logits(ctx, &logits, &n_logits);
    if (st == EMBER_OK) {
        for (i = 1; i < n_logits; i++)
            if (logits[i] > logits[best]) best = i;
        st = ember_token_to_piece(model, (ember_token)best, false, piece, sizeof piece,
                                  &needed);
    }
    if (st == EMBER_OK)
        printf("next token: \"%s\" (id %zu; the observer saw %u)\n", piece, best, w.top_token);
    else
        fprintf(stderr, "ember: %s: %s\n", ember_status_name(st), ember_last_error());

    ember_context_free(ctx);
    ember_model_free(model);
    return st == EMBER_OK && best == w.top_token ? 0 : 1;
}
