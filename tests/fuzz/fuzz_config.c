/* Fuzz target: the config loader (JSON text, schema, ranges, "did you
 * mean"), with an optional --set override after a NUL byte. A config that
 * loads must survive nb_config_to_json and parse back to the same struct. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_fuzz_init();
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    /* "JSON\0KEY=VALUE": the part after the first NUL is one override */
    const size_t len = strlen(text);
    const char *set = len + 1 < size ? text + len + 1 : NULL;
    nb_config c;
    if (nb_config_parse(text, "fuzz.json", set ? &set : NULL, set ? 1 : 0, &c) == NB_OK) {
        char *json = nb_config_to_json(&c);
        if (json) {
            nb_config again;
            if (nb_config_parse(json, "fuzz.json", NULL, 0, &again) != NB_OK) abort();
            memcpy(again.source, c.source, sizeof c.source);
            if (memcmp(&c, &again, sizeof c) != 0) abort();
            nb_free(json);
        }
    }
    free(text);
    return 0;
}
