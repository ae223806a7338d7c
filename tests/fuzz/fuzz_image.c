/* libFuzzer harness for image probing and decoding (JPEG, PNG, WebP, EXIF).
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_image; run: build-fuzz/fuzz_image tests/fuzz/corpus/image.
 *
 * The last input byte picks the options (the first bytes are the format's signature, so they
 * cannot vary without leaving the decoders): odd -> DCT downscaling with a minimum size taken
 * from its bits, bit 7 -> ignore_orientation. Any broken invariant traps. */
#include <stddef.h>
#include <stdint.h>

#include "facework/image.h"

#define FUZZ_MAX_BYTES (4u * 1024u * 1024u)
#define FUZZ_MAX_PIXELS (4u * 1000u * 1000u)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fw_image_info info;
    fw_error err;
    fw_err prc = fw_image_probe(data, size, &info, &err);
    if (prc == FW_OK) {
        CHECK(info.format != FW_FORMAT_UNKNOWN);
        CHECK(info.width > 0 && info.height > 0);
        CHECK(info.orientation >= 1 && info.orientation <= 8);
    } else {
        CHECK(err.code == prc && err.message[0] != '\0');
    }

    fw_decode_opts o = {.max_bytes = FUZZ_MAX_BYTES, .max_pixels = FUZZ_MAX_PIXELS};
    if (size > 0) {
        uint8_t k = data[size - 1];
        if (k & 1) {
            o.min_width = ((k >> 1) & 7) * 24;
            o.min_height = ((k >> 4) & 7) * 24;
        }
        o.ignore_orientation = (k & 0x80) != 0;
    }
    fw_image *img = NULL;
    fw_err rc = fw_image_decode(data, size, &o, &img, &err);
    if (rc != FW_OK) {
        CHECK(img == NULL);
        CHECK(err.code == rc && err.message[0] != '\0');
        return 0;
    }
    CHECK(prc == FW_OK); /* anything that decodes also probes */
    CHECK(img != NULL && img->pixels != NULL);
    CHECK(img->width > 0 && img->height > 0);
    CHECK(img->width <= img->orig_width && img->height <= img->orig_height);
    CHECK((uint64_t)img->orig_width * (uint64_t)img->orig_height <= FUZZ_MAX_PIXELS);
    int orient = o.ignore_orientation ? 1 : info.orientation;
    int ow = orient >= 5 ? info.height : info.width, oh = orient >= 5 ? info.width : info.height;
    CHECK(img->orig_width == ow && img->orig_height == oh);
    /* Touch both ends of the buffer so that a short allocation shows up under ASan. */
    const size_t n = (size_t)img->width * (size_t)img->height * 3;
    volatile uint8_t sink = img->pixels[0] ^ img->pixels[n - 1];
    (void)sink;
    fw_image_free(img);
    return 0;
}
