/*
 * dma_pattern.h - the byte patterns the DMA probes write and how they describe what a buffer
 * holds afterwards ("pattern N", "untouched", "all 0x00" or a mix), so a DMA's outcome prints as
 * one stable line. Include after "labels.h".
 */
#ifndef IOASIDFS_DMA_PATTERN_H
#define IOASIDFS_DMA_PATTERN_H

#include <stddef.h>

static unsigned char pat(size_t i, unsigned int seed)
{
	return (unsigned char)((i * 7 + seed) ^ (i >> 8));
}

static void fill(unsigned char *b, size_t len, unsigned int seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		b[i] = pat(i, seed);
}

/* Describes 'len' bytes at 'b' against the pattern 'seed' / a fill byte. */
static void describe(const char *label, const unsigned char *b, size_t len,
		     unsigned int seed, int fillbyte)
{
	size_t i, pmatch = 0, fmatch = 0, zero = 0;

	for (i = 0; i < len; i++) {
		pmatch += b[i] == pat(i, seed);
		fmatch += b[i] == (unsigned char)fillbyte;
		zero += b[i] == 0;
	}
	if (pmatch == len)
		note(label, "pattern %u (all 0x%zx bytes)", seed, len);
	else if (fmatch == len)
		note(label, "untouched (all 0x%02x)", fillbyte);
	else if (zero == len)
		note(label, "all 0x00");
	else
		note(label, "mixed: %zu pattern, %zu fill, %zu zero of 0x%zx", pmatch,
		     fmatch, zero, len);
}

#endif
