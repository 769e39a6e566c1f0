/*
 * The Swift package's module map (bindings/swift/Sources/CEmber/include/module.modulemap)
 * checked with clang, since no Swift compiler runs here: this file imports the CEmber
 * module the way Objective-C does (@import needs -fmodules; Swift's `import CEmber` reads
 * the same module map), then uses the C API through it on a real model.
 *
 *   swift_module MODEL.gguf
 */
@import CEmber;

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    ember_model *model = NULL;
    ember_model_info info;
    ember_token tokens[16];
    size_t n = 0;
    const char *text = "The capital of France is";
    ember_status st;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    if (ember_abi_version() != EMBER_ABI_VERSION) {
        fprintf(stderr, "ABI %u, header %d\n", ember_abi_version(), EMBER_ABI_VERSION);
        return 1;
    }
    st = ember_model_load(argv[1], NULL, &model);
    if (st != EMBER_OK) {
        fprintf(stderr, "%s: %s\n", ember_status_name(st), ember_last_error());
        return 1;
    }
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    st = ember_model_get_info(model, &info);
    if (st == EMBER_OK) st = ember_tokenize(model, text, strlen(text), true, false, tokens, 16, &n);
    if (st != EMBER_OK) {
        fprintf(stderr, "%s: %s\n", ember_status_name(st), ember_last_error());
        ember_model_free(model);
        return 1;
    }
    printf("swift_module: ember %s through @import CEmber: n_vocab %u, \"%s\" is %zu tokens\n",
           ember_version(), info.n_vocab, text, n);
    ember_model_free(model);
    return 0;
}
