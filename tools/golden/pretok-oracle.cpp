// pretok-oracle: llama.cpp's pre-tokenizer splits and code point classes, straight from
// libllama's exported unicode helpers. Built and run by tools/make-tokenizer-fixtures;
// never committed as a binary.
//
// usage: pretok-oracle flags          -> "start code" lines: ranges of equal class code
//        pretok-oracle split < input  -> per record, per pre-tokenizer: "name len,len,..."
// input: "<n types>\n", then per type "<name>\n<n regexes>\n" and each regex as a record,
//        then the text records; a record is "<byte length>\n<bytes>".
// Class code: llama.cpp's category bit index + 1 in the low nibble, 0x10 for White_Space.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

// Declarations matching libllama's (src/unicode.h); the flags struct is 16 bits of flags.
struct unicode_cpt_flags { uint16_t bits; };
unicode_cpt_flags unicode_cpt_flags_from_cpt(uint32_t cpt);
std::vector<std::string> unicode_regex_split(const std::string & text, const std::vector<std::string> & regex_exprs, bool byte_encode);

static bool read_record(std::string & out) {
    size_t len;
    if (scanf("%zu", &len) != 1) return false;
    if (getchar() != '\n') { fprintf(stderr, "bad record\n"); exit(1); }
    out.resize(len);
    if (len && fread(&out[0], 1, len, stdin) != len) { fprintf(stderr, "short record\n"); exit(1); }
    return true;
}

int main(int argc, char ** argv) {
    if (argc == 2 && !strcmp(argv[1], "flags")) {
        int prev = -1;
        for (uint32_t c = 0; c < 0x110000; ++c) {
            uint16_t f = unicode_cpt_flags_from_cpt(c).bits;
            int cat = 0;
            for (int b = 0; b < 8; ++b) if (f & (1 << b)) { cat = b + 1; break; }
            int code = cat | ((f & 0x100) ? 0x10 : 0);
            if (code != prev) { printf("%u %d\n", c, code); prev = code; }
        }
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "split")) { fprintf(stderr, "usage: %s flags|split\n", argv[0]); return 2; }
    int ntypes;
    if (scanf("%d", &ntypes) != 1) return 1;
    std::vector<std::pair<std::string, std::vector<std::string>>> types;
    for (int i = 0; i < ntypes; ++i) {
        char name[128];
        int n;
        if (scanf("%127s %d", name, &n) != 2) return 1;
        getchar();
        std::vector<std::string> res(n);
        for (auto & r : res) if (!read_record(r)) return 1;
        types.emplace_back(name, res);
    }
    std::string text;
    while (read_record(text)) {
        for (auto & t : types) {
            auto words = unicode_regex_split(text, t.second, false);
            printf("%s ", t.first.c_str());
            for (size_t i = 0; i < words.size(); ++i) printf(i ? ",%zu" : "%zu", words[i].size());
            printf("\n");
        }
    }
    return 0;
}
