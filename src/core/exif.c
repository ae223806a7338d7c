/* facework internal: bounds-checked EXIF orientation reader (see exif.h). */
#include "core/exif.h"

#include <string.h>

#define TAG_ORIENTATION 0x0112
#define TIFF_SHORT 3
#define TIFF_LONG 4

static uint16_t rd16(const uint8_t *p, int big)
{
    return big ? (uint16_t)((p[0] << 8) | p[1]) : (uint16_t)((p[1] << 8) | p[0]);
}

static uint32_t rd32(const uint8_t *p, int big)
{
    if (big)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

int fw__exif_orientation_tiff(const uint8_t *tiff, size_t len)
{
    if (!tiff)
        return 1;
    if (len >= 6 && memcmp(tiff, "Exif\0\0", 6) == 0) {
        tiff += 6;
        len -= 6;
    }
    if (len < 8)
        return 1;
    int big;
    if (tiff[0] == 'I' && tiff[1] == 'I')
        big = 0;
    else if (tiff[0] == 'M' && tiff[1] == 'M')
        big = 1;
    else
        return 1;
    if (rd16(tiff + 2, big) != 42)
        return 1;
    uint64_t ifd = rd32(tiff + 4, big);
    if (ifd < 8 || ifd + 2 > len)
        return 1;
    unsigned count = rd16(tiff + ifd, big);
    for (unsigned i = 0; i < count; i++) {
        uint64_t e = ifd + 2 + 12u * (uint64_t)i;
        if (e + 12 > len)
            break;
        const uint8_t *ent = tiff + e;
        if (rd16(ent, big) != TAG_ORIENTATION)
            continue;
        unsigned type = rd16(ent + 2, big);
        uint32_t n = rd32(ent + 4, big);
        uint32_t v;
        if (type == TIFF_SHORT && n >= 1)
            v = rd16(ent + 8, big);
        else if (type == TIFF_LONG && n == 1)
            v = rd32(ent + 8, big);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

int fw__exif_orientation_jpeg(const uint8_t *data, size_t len)
{
    if (!data || len < 4 || data[0] != 0xFF || data[1] != 0xD8)
        return 1;
    size_t p = 2;
    while (p < len) {
        if (data[p] != 0xFF)
            return 1; /* not at a marker: give up rather than guess */
        while (p < len && data[p] == 0xFF)
            p++; /* fill bytes */
        if (p >= len)
            return 1;
        uint8_t m = data[p++];
        if (m == 0xD9 || m == 0xDA) /* EOI, SOS: no metadata after this point */
            return 1;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue; /* TEM, RSTn: no length */
        if (len - p < 2)
            return 1;
        size_t seg = ((size_t)data[p] << 8) | data[p + 1];
        if (seg < 2)
            return 1;
        size_t body = p + 2, blen = seg - 2;
        if (blen > len - body)
            blen = len - body; /* truncated segment: read what is there */
        if (m == 0xE1 && blen >= 6 && memcmp(data + body, "Exif\0\0", 6) == 0)
            return fw__exif_orientation_tiff(data + body + 6, blen - 6);
        if (seg > len - p)
            return 1;
        p += seg;
    }
    return 1;
}

int fw__exif_orientation_webp(const uint8_t *data, size_t len)
{
    if (!data || len < 12 || memcmp(data, "RIFF", 4) != 0 || memcmp(data + 8, "WEBP", 4) != 0)
        return 1;
    uint64_t end = 8 + (uint64_t)rd32(data + 4, 0);
    if (end > len)
        end = len;
    uint64_t p = 12;
    while (p + 8 <= end) {
        uint64_t size = rd32(data + p + 4, 0);
        uint64_t body = p + 8;
        if (memcmp(data + p, "EXIF", 4) == 0) {
            if (size > end - body)
                size = end - body;
            return fw__exif_orientation_tiff(data + body, (size_t)size);
        }
        p = body + size + (size & 1);
    }
    return 1;
}
