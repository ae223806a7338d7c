/* libFuzzer harness for server/api: every route parses the input both as a JSON body and as
 * a multipart body (boundary "fuzzb"), and whatever parses is encoded back with fabricated
 * pipeline results; the response must be valid JSON with one result per item.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_request; run: build-fuzz/fuzz_request tests/fuzz/corpus/request.
 *
 * Failures must be 400, 413 or 415 with a message (never a 5xx for bad input); successes must
 * respect the limits. Any broken invariant traps. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/api.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_IMAGES 8
#define MAX_IMAGE_BYTES 4096
#define DIM 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(const fw_api_request *req, uint32_t salt)
{
    fw_result res[MAX_IMAGES];
    fw_face faces[MAX_IMAGES][2];
    static float emb[DIM] = {0.5f, -0.25f, 1e-7f, 0.0f, 3.0e38f, -1e-40f, 0.125f, 0.3f};
    emb[3] = (salt & 1) ? NAN : 0.0f;
    memset(res, 0, sizeof res);
    memset(faces, 0, sizeof faces);
    for (size_t i = 0; i < req->n_items; i++) {
        res[i].width = 100;
        res[i].height = 80;
        if ((salt >> i) & 2) {
            res[i].status = FW_ERR_CORRUPT;
            strcpy(res[i].message, "cannot decode");
            continue;
        }
        res[i].n_faces = req->route == FW_ROUTE_V1_EMBED ? 1 : 2;
        res[i].faces = faces[i];
        for (int k = 0; k < 2; k++) {
            faces[i][k].score = k ? 0.3f : 0.9f;
            faces[i][k].bbox[2] = 10.0f * (float)i;
            faces[i][k].embedding = emb;
            /* the quality object (NaN included) and a crop, on some faces */
            if (salt & 4) {
                static const uint8_t crop[7] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a};
                faces[i][k].has_quality = true;
                faces[i][k].quality =
                    (fw_face_quality){.sharpness_aligned = (salt & 8) ? NAN : 12.5f,
                                      .sharpness_box = 3e38f,
                                      .yaw = -45.0f,
                                      .score = 0.5f,
                                      .reasons = salt & 0x1f,
                                      .usable = !(salt & 0x1f)};
                faces[i][k].crop = (fw_face_crop){FW_FORMAT_PNG, 3, 2, crop, (salt >> 5) % 8};
            }
        }
    }
    fw_api_response_info info = {.took_ms = 1.5,
                                 .provider = "cpu",
                                 .model = "default",
                                 .embedding_dim = DIM,
                                 .worker_id = "fuzz"};
    char *out = NULL;
    size_t len = 0;
    CHECK(fw_api_encode_response(req, res, &info, &out, &len, NULL) == FW_OK);
    CHECK(out != NULL && strlen(out) == len);
    json_t *j = json_loadb(out, len, 0, NULL);
    CHECK(j != NULL);
    json_t *results = json_object_get(j, "results");
    if (req->route == FW_ROUTE_LEGACY_MULTIPART) {
        CHECK(json_is_object(results));
        CHECK(json_object_size(results) >= 1 && json_object_size(results) <= req->n_items);
    } else {
        CHECK(json_array_size(results) == req->n_items);
    }
    json_decref(j);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const cts[] = {"application/json", "multipart/form-data; boundary=fuzzb"};
    fw_api_limits lim = {.max_images = MAX_IMAGES,
                         .max_image_bytes = MAX_IMAGE_BYTES,
                         .max_body_bytes = 1u << 20,
                         .max_header_bytes = 512};
    uint32_t salt = size ? data[size - 1] : 0;
    for (int route = 0; route < FW_ROUTE__COUNT; route++) {
        for (int c = 0; c < 2; c++) {
            fw_api_request *req = (fw_api_request *)1;
            fw_api_error err;
            fw_err rc = fw_api_parse((fw_api_route)route, cts[c], data, size, &lim, &req, &err);
            if (rc != FW_OK) {
                CHECK(req == NULL);
                CHECK(err.code == rc && err.message[0] != '\0');
                CHECK(err.status == 400 || err.status == 413 || err.status == 415);
                continue;
            }
            CHECK(req != NULL && req->route == (fw_api_route)route);
            CHECK(req->n_items >= 1 && req->n_items <= MAX_IMAGES);
            for (size_t i = 0; i < req->n_items; i++) {
                const fw_api_item *it = &req->items[i];
                CHECK(strlen(it->id) < FW_API_ID_MAX);
                if (it->error == FW_OK) {
                    CHECK(it->data != NULL && it->len >= 1 && it->len <= MAX_IMAGE_BYTES);
                    volatile uint8_t sink = it->data[0] ^ it->data[it->len - 1];
                    (void)sink;
                } else {
                    CHECK(it->data == NULL && it->message[0] != '\0');
                }
            }
            CHECK(isfinite(req->options.min_score) && isfinite(req->options.min_face_quality));
            CHECK(req->options.max_faces >= 0);
            check_response(req, salt);
            fw_api_request_free(req);
        }
    }
    return 0;
}
