/*
 * iova_table: the translation structure of one I/O address space.
 *
 * It answers what an IOMMU answers for a device access -- "which process memory backs this IOVA,
 * and may the device read or write it?" -- plus the dirty-page bookkeeping of
 * drivers/vfio/vfio_iommu_type1.c. It is deliberately policy-free: the type1 and iommufd rules
 * (which unmaps are allowed, aperture, entry limits, RLIMIT_MEMLOCK) live in the Python engine;
 * this structure only keeps non-overlapping mappings and translates.
 *
 * Structure: a treap (randomised balanced binary search tree, expected depth ~1.4 log2 n) of
 * non-overlapping entries [iova, last], each carrying vaddr, prot, owner and, while dirty tracking
 * is on, a bitmap of its pages. Map is one insertion, unmap is two splits of the tree plus one
 * merge, so both are O(log n + k) for k removed entries and never do per-page work, whatever the
 * size of the range. Lookups are O(log n) walks of the tree; after enough lookups without a
 * mutation a flat sorted index (contiguous u64 arrays, binary search) is built so lookup-heavy
 * phases (device DMA between rare MAP/UNMAP calls) run out of cache-friendly arrays.
 *
 * Addresses are u64; ranges are passed as inclusive [iova, last] so a range may end at 2^64-1.
 * All functions are thread-safe (one mutex per table): the Python binding releases the GIL.
 * Functions that produce lists write into caller buffers of capacity `cap` and return the number
 * of items n; when n > cap nothing was written and nothing was changed: call again with a buffer
 * of at least n items.
 */
#ifndef IOVA_TABLE_H
#define IOVA_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define IOVA_PROT_READ 1u
#define IOVA_PROT_WRITE 2u

#define IOVA_FAULT_NOT_MAPPED 1
#define IOVA_FAULT_NO_PERMISSION 2

/* translate() returned a fault (see struct iova_fault) rather than segments. */
#define IOVA_TRANSLATE_FAULT (-1000)

/* The kernel's DIRTY_BITMAP_PAGES_MAX: a mapping or a bitmap query spans at most INT_MAX pages. */
#define IOVA_DIRTY_PAGES_MAX 2147483647ull

typedef struct iova_table iova_table;

struct iova_mapping {
    uint64_t iova;
    uint64_t last;   /* inclusive */
    uint64_t vaddr;
    uint64_t owner;
    uint32_t prot;
};

struct iova_hit {
    uint64_t owner;
    uint64_t vaddr;
    uint32_t prot;
};

struct iova_segment {
    uint64_t owner;
    uint64_t vaddr;
    uint64_t vlast;  /* inclusive: a segment may cover all 2^64 bytes */
};

struct iova_fault {
    uint64_t iova;
    int reason;      /* IOVA_FAULT_* */
};

/* A table whose mappings are aligned to `page_size` and whose dirty bits and pins count in
 * pages of `dirty_page_size` (both powers of two, dirty_page_size >= page_size; type1 uses one
 * size for both, an iommufd IOAS maps bytes but tracks IOMMU pages). While dirty tracking is on,
 * every entry must be aligned to the dirty page size as well: mapping, or cutting an entry
 * (unmap), at a finer alignment is -EINVAL then. NULL if invalid or out of memory. */
iova_table *iova_table_new(uint64_t page_size, uint64_t dirty_page_size);
void iova_table_free(iova_table *t);
uint64_t iova_table_count(iova_table *t);

/* 0, -EINVAL (misaligned, empty, wrapping, bad prot, bitmap too large), -EEXIST (overlap),
 * -ENOMEM. */
int iova_table_map(iova_table *t, uint64_t iova, uint64_t last, uint64_t vaddr, uint32_t prot,
                   uint64_t owner);

/* Removes every mapped byte of [iova, last], splitting entries that straddle either end; the
 * removed pieces go to `out` in ascending order. Pins and dirty bits of the range go with them.
 * Returns n >= 0, or -EINVAL / -ENOMEM. */
int64_t iova_table_unmap(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                         size_t cap);

/* The whole entries sharing a byte with [iova, last], ascending (nothing is changed). */
int64_t iova_table_mappings(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                            size_t cap);

/* 1 and *hit filled if `iova` is mapped, else 0. */
int iova_table_lookup(iova_table *t, uint64_t iova, struct iova_hit *hit);

/* How many of iovas[0..n) are mapped: the lookup loop without one binding call per lookup. Once
 * the flat index is in use, eight descents run interleaved (independent searches overlap their
 * cache misses): the throughput of batched translation, e.g. of a PRP or scatter list. */
uint64_t iova_table_count_mapped(iova_table *t, const uint64_t *iovas, size_t n);

/* Full lookups of n IOVAs in one call (the flat index's interleaved descents): for each i,
 * owners[i], vaddrs[i] and prots[i] of the entry containing iovas[i], or 0, 0, -1 when it is not
 * mapped. Returns how many were mapped. */
uint64_t iova_table_lookup_many(iova_table *t, const uint64_t *iovas, size_t n, uint64_t *owners,
                                uint64_t *vaddrs, int8_t *prots);

/* Segments covering [iova, last] for an access needing `access` (IOVA_PROT_* bits); adjacent
 * pieces with the same owner and contiguous vaddr are merged. Returns n >= 0, or
 * IOVA_TRANSLATE_FAULT with *fault set to the first faulting IOVA and the reason, or -EINVAL. */
int64_t iova_table_translate(iova_table *t, uint64_t iova, uint64_t last, uint32_t access,
                             struct iova_segment *out, size_t cap, struct iova_fault *fault);

/* Dirty tracking (VFIO_IOMMU_DIRTY_PAGES START/STOP): starting while on does nothing; starting
 * gives every entry a clean bitmap with its pinned pages set. -EINVAL if an entry has more than
 * IOVA_DIRTY_PAGES_MAX dirty pages or is not aligned to the dirty page size, -ENOMEM. Stopping
 * drops every bitmap. Below, "page" means a dirty page. */
int iova_table_start_dirty(iova_table *t);
void iova_table_stop_dirty(iova_table *t);
int iova_table_dirty_tracking(iova_table *t);

/* A device wrote the bytes [iova, last]: marks every mapped page they touch (no-op when tracking
 * is off), as vfio_dma_rw does after a successful copy. */
void iova_table_mark_dirty(iova_table *t, uint64_t iova, uint64_t last);

/* ORs the dirty state of the pages of [iova, last] into `bitmap` (bit i = page iova + i*dirty_page_size,
 * u64 words; the caller zeroes it, nwords >= ceil(npages/64)). With `all_mapped`, every mapped
 * page is reported (the kernel's rule when a group cannot report dirty pages and all pages are
 * pinned and mapped). With `clear`, the range's bits are then reset to its pinned pages
 * (vfio_iova_dirty_bitmap's re-populate). 0, or -EINVAL (tracking off, misaligned, too large,
 * nwords too small). */
int iova_table_read_dirty(iova_table *t, uint64_t iova, uint64_t last, int clear, int all_mapped,
                          uint64_t *bitmap, size_t nwords);

/* vfio_pin_pages: every page of [iova, last] must be mapped (-EINVAL) with `access` (-EPERM);
 * all or nothing. Each page's pin count goes up by one; while tracking, pinned pages are dirty. */
int iova_table_pin(iova_table *t, uint64_t iova, uint64_t last, uint32_t access);
/* Drops one pin of every pinned page of [iova, last]; pages not pinned are ignored. -EINVAL if
 * misaligned. */
int iova_table_unpin(iova_table *t, uint64_t iova, uint64_t last);
/* Pin count of the page holding `iova`. */
uint64_t iova_table_pin_count(iova_table *t, uint64_t iova);

#endif
