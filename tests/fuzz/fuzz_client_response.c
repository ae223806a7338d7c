/* libFuzzer harness for the client's worker-response parser (src/client/response.h).
 * The first byte picks the route kind and the expected item count (0..7); the rest is the
 * response body. Seeds: tests/fuzz/corpus/client_response (real worker responses).
 * Any outcome but a crash, a leak or FW_OK with inconsistent results is fine. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "client/response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 3;
    fw__resp_kind kind = FW__RESP_ANALYZE;
    /* a body starting with '{' is a real response (3 items, analyze) */
    if (size > 0 && data[0] != '{') {
        n = data[0] & 7u;
        kind = (fw__resp_kind)((data[0] >> 3) % 3u);
        data++;
        size--;
    }
    fw__item_out out[8];
    if (fw__response_parse((const char *)data, size, kind, n, out, NULL) == FW_OK) {
        for (size_t i = 0; i < n; i++) {
            const fw_result *r = &out[i].res;
            if (r->n_faces && !r->faces)
                abort();
            for (size_t j = 0; j < r->n_faces && out[i].dim; j++)
                if (r->faces[j].embedding)
                    (void)r->faces[j].embedding[out[i].dim - 1];
            fw_result_clear(&out[i].res);
        }
    }
    return 0;
}
