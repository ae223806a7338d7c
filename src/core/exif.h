/* facework internal: EXIF orientation lookup in JPEG, PNG (eXIf) and WebP containers.
 *
 * Every function takes untrusted bytes, checks each offset against the buffer, and returns an
 * orientation in 1..8; 1 whenever the tag is absent, malformed or out of range. */
#ifndef FW_CORE_EXIF_H
#define FW_CORE_EXIF_H

#include <stddef.h>
#include <stdint.h>

/* Orientation from a TIFF structure ("II*\0" or "MM\0*" header, IFD0 tag 0x0112). A leading
 * "Exif\0\0" prefix is skipped. */
int fw__exif_orientation_tiff(const uint8_t *tiff, size_t len);

/* Orientation from the first APP1 "Exif\0\0" segment of a JPEG, scanning the markers before
 * the first SOS. */
int fw__exif_orientation_jpeg(const uint8_t *data, size_t len);

/* Orientation from the "EXIF" chunk of a RIFF/WebP file. */
int fw__exif_orientation_webp(const uint8_t *data, size_t len);

#endif
