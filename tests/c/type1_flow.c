/*
 * type1_flow.c - fidelity probe for the VFIO type1 IOMMU backend behind a
 * legacy container (/dev/vfio/vfio) and group (/dev/vfio/1).
 *
 * The classic flow of the kernel's VFIO documentation (open the container,
 * check the API and extensions, open the group, attach it, set the IOMMU
 * type, ask for the IOMMU info and its capability chain, map and unmap),
 * then UNMAP_ALL, dirty-page tracking, UPDATE_VADDR and the error cases:
 * overlap, v1/v2 unmap rules, alignment, the MSI window, the aperture, bad
 * user memory, bad flags, wrap-around, empty unmaps and group exclusivity.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * plus "<what>.<field> = <value>" lines for the fields the kernel writes
 * back (sizes, flags, IOVAs and bitmap words in hex; argsz and capability
 * offsets in decimal).  Nothing printed depends on addresses, pids or
 * timing: user addresses are named by the buffer they belong to.  The
 * program must start with only fds 0, 1 and 2 open.
 *
 * A label printed before gets " #n" (its n-th use), so every line is unique;
 * the same lines are printed whatever the answers, so outputs can be compared
 * line by line.
 *
 * Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o type1_flow type1_flow.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"

#define CONTAINER "/dev/vfio/vfio"
#define GROUP "/dev/vfio/1"
#define PG 0x1000UL

#include "type1_probe.h"

/* UNMAP_DMA with GET_DIRTY_BITMAP: one u64 of bitmap, pre-set to 'word'. */
static long unmap_dirty(const char *p, int cfd, uint64_t iova, uint64_t size,
			uint64_t pgsize, uint64_t bsize, uint64_t word)
{
	struct {
		struct vfio_iommu_type1_dma_unmap u;
		struct vfio_bitmap b;
	} a;
	uint64_t bits[2] = { word, 0 };
	char what[256];
	long r;

	memset(&a, 0, sizeof(a));
	a.u.argsz = sizeof(a);
	a.u.flags = U_DIRTY;
	a.u.iova = iova;
	a.u.size = size;
	a.b.pgsize = pgsize;
	a.b.size = bsize;
	a.b.data = (__u64 *)bits;
	snprintf(what, sizeof(what),
		 "%s: UNMAP_DMA(GET_DIRTY_BITMAP,iova=0x%llx,size=0x%llx,pgsize=0x%llx,bitmap.size=%llu,word=0x%llx)",
		 p, (ull)iova, (ull)size, (ull)pgsize, (ull)bsize, (ull)word);
	errno = 0;
	r = ioctl(cfd, VFIO_IOMMU_UNMAP_DMA, &a);
	report(what, r, errno);
	printf("%s.size = 0x%llx\n", cur, (ull)a.u.size);
	printf("%s.bitmap = 0x%llx 0x%llx\n", cur, (ull)bits[0], (ull)bits[1]);
	return r;
}

static const char *dirty_flags(uint32_t f)
{
	static char buf[64];

	switch (f) {
	case VFIO_IOMMU_DIRTY_PAGES_FLAG_START: return "START";
	case VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: return "STOP";
	case VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: return "GET_BITMAP";
	default:
		snprintf(buf, sizeof(buf), "0x%x", f);
		return buf;
	}
}

static long dirty_simple(const char *p, int cfd, uint32_t flags)
{
	struct vfio_iommu_type1_dirty_bitmap d;
	char what[160];

	memset(&d, 0, sizeof(d));
	d.argsz = sizeof(d);
	d.flags = flags;
	snprintf(what, sizeof(what), "%s: DIRTY_PAGES(%s)", p, dirty_flags(flags));
	return ioc(what, cfd, VFIO_IOMMU_DIRTY_PAGES, &d);
}

/* DIRTY_PAGES GET_BITMAP into two u64 words, the first pre-set to 'word'. */
static long dirty_get(const char *p, int cfd, uint64_t iova, uint64_t size,
		      uint64_t pgsize, uint64_t bsize, uint64_t word)
{
	struct {
		struct vfio_iommu_type1_dirty_bitmap d;
		struct vfio_iommu_type1_dirty_bitmap_get g;
	} a;
	uint64_t bits[2] = { word, 0 };
	char what[256];
	long r;

	memset(&a, 0, sizeof(a));
	a.d.argsz = sizeof(a);
	a.d.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	a.g.iova = iova;
	a.g.size = size;
	a.g.bitmap.pgsize = pgsize;
	a.g.bitmap.size = bsize;
	a.g.bitmap.data = (__u64 *)bits;
	snprintf(what, sizeof(what),
		 "%s: DIRTY_PAGES(GET_BITMAP,iova=0x%llx,size=0x%llx,pgsize=0x%llx,bitmap.size=%llu,word=0x%llx)",
		 p, (ull)iova, (ull)size, (ull)pgsize, (ull)bsize, (ull)word);
	r = ioc(what, cfd, VFIO_IOMMU_DIRTY_PAGES, &a);
	printf("%s.bitmap = 0x%llx 0x%llx\n", cur, (ull)bits[0], (ull)bits[1]);
	return r;
}

/*
 * The worked examples of vfio-legacy.md section 2.2: A=[0x1000,0x3000),
 * B=[0x3000,0x5000), then one UNMAP request, then UNMAP_ALL to show what
 * was left.
 */
static void unmap_row(const char *p, int cfd, unsigned char *buf,
		      uint32_t flags, uint64_t iova, uint64_t size)
{
	char q[160];

	snprintf(q, sizeof(q), "%s (0x%llx,0x%llx%s)", p, (ull)iova, (ull)size,
		 flags & U_ALL ? ",ALL" : "");
	map_dma(q, cfd, F_RW, buf, "buf", 0x1000, 0x2000);
	map_dma(q, cfd, F_RW, buf + 0x2000, "buf+0x2000", 0x3000, 0x2000);
	unmap_dma(q, cfd, flags, iova, size);
	snprintf(q, sizeof(q), "%s (0x%llx,0x%llx%s) left", p, (ull)iova,
		 (ull)size, flags & U_ALL ? ",ALL" : "");
	unmap_dma(q, cfd, U_ALL, 0, 0);
}

static void unmap_table(const char *p, int cfd, unsigned char *buf)
{
	unmap_row(p, cfd, buf, 0, 0x1000, 0x2000);
	unmap_row(p, cfd, buf, 0, 0x1000, 0x1000);
	unmap_row(p, cfd, buf, 0, 0x2000, 0x3000);
	unmap_row(p, cfd, buf, 0, 0x0, 0x10000);
	unmap_row(p, cfd, buf, 0, 0x10000, 0x1000);
	unmap_row(p, cfd, buf, U_ALL, 0, 0);
	unmap_row(p, cfd, buf, 0, 0x0, 0x2000);
	unmap_row(p, cfd, buf, 0, 0x3000, 0x1000);
	unmap_row(p, cfd, buf, 0, 0x1000, 0x3000);
	unmap_row(p, cfd, buf, 0, 0x2000, 0x2000);
}

int main(void)
{
	unsigned char *buf, *big, *hole, *none, *ro, *rw8, *half;
	uint32_t grown;
	uint64_t end;
	int cfd, cfd2, gfd, gfd2;
	const char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);

	buf = alloc_pages(4, PROT_READ | PROT_WRITE);
	rw8 = alloc_pages(8, PROT_READ | PROT_WRITE);
	ro = alloc_pages(2, PROT_READ);
	none = alloc_pages(2, PROT_NONE);
	/* two pages: the first read/write, the second PROT_NONE */
	half = alloc_pages(2, PROT_READ | PROT_WRITE);
	if (mprotect(half + PG, PG, PROT_NONE)) {
		perror("mprotect");
		return 2;
	}
	/* address space only (never pinned: every use below fails first) */
	big = mmap(NULL, 0x200000, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (big == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	/* a two-page hole: mapped, then unmapped (last, so nothing reuses it) */
	hole = alloc_pages(2, PROT_READ | PROT_WRITE);
	munmap(hole, 2 * PG);

	/* ---- the classic flow ---- */
	p = "flow";
	cfd = open_report("flow: open " CONTAINER, CONTAINER, O_RDWR);
	if (cfd < 0)
		return 1;
	ioc_val("flow: GET_API_VERSION", cfd, VFIO_GET_API_VERSION, 0);
	check_ext(p, cfd, VFIO_TYPE1_IOMMU, "TYPE1");
	check_ext(p, cfd, VFIO_TYPE1v2_IOMMU, "TYPE1v2");
	check_ext(p, cfd, VFIO_UNMAP_ALL, "UNMAP_ALL");
	check_ext(p, cfd, VFIO_UPDATE_VADDR, "UPDATE_VADDR");
	gfd = open_report("flow: open " GROUP, GROUP, O_RDWR);
	if (gfd < 0)
		return 1;
	group_status(p, gfd);
	set_container(p, gfd, cfd);
	group_status(p, gfd);
	set_iommu(p, cfd, VFIO_TYPE1v2_IOMMU);
	check_ext(p, cfd, VFIO_TYPE1_IOMMU, "TYPE1");
	check_ext(p, cfd, VFIO_TYPE1v2_IOMMU, "TYPE1v2");
	check_ext(p, cfd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	check_ext(p, cfd, VFIO_UNMAP_ALL, "UNMAP_ALL");
	check_ext(p, cfd, VFIO_UPDATE_VADDR, "UPDATE_VADDR");

	get_info(p, cfd, 15, 0);
	get_info(p, cfd, 16, 0);
	get_info(p, cfd, 20, 0);
	grown = get_info(p, cfd, 24, 0);
	if (grown <= 24 || grown > INFO_BUF)
		grown = 26;	/* keep the same lines when GET_INFO fails */
	get_info(p, cfd, grown - 1, 0);
	get_info(p, cfd, grown, 1);
	end = aperture_end;
	address_width(p);
	get_info(p, cfd, INFO_BUF, 1);
	if (!end)
		end = (1ULL << 39) - 1;

	map_dma(p, cfd, F_RW, buf, "buf", 0x0, 4 * PG);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, 0, 0x0, 4 * PG);
	dma_avail(p, cfd);
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	map_dma(p, cfd, F_READ, buf + 0x2000, "buf+0x2000", 0x102000, 2 * PG);
	map_dma(p, cfd, F_WRITE, buf, "buf", 0x200000, 4 * PG);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, U_ALL, 0x1000, 0);
	unmap_dma(p, cfd, U_ALL, 0, 0x1000);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, U_ALL, 0, 0);

	/* ---- dirty page tracking (v2) ---- */
	p = "dirty";
	map_dma(p, cfd, F_RW, rw8, "rw8", 0x200000, 6 * PG);
	map_dma(p, cfd, F_RW, rw8 + 6 * PG, "rw8+0x6000", 0x208000, 2 * PG);
	dirty_get(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	unmap_dirty(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	dirty_simple(p, cfd, 0);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START |
				     VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dirty_simple(p, cfd, 0x8);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_get(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x1fe000, 8 * PG, PG, 8, 0xffff000000000001ULL);
	dirty_get(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x200000, 16 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x200000, 16 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x201000, PG, PG, 8, 0);
	dirty_get(p, cfd, 0x200000, 6 * PG, PG, 0, 0);
	dirty_get(p, cfd, 0x200000, 6 * PG, 2 * PG, 8, 0);
	dirty_get(p, cfd, 0x200800, 6 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0x200000, 0, PG, 8, 0);
	dirty_get(p, cfd, 0xfffffffffffff000ULL, 2 * PG, PG, 8, 0);
	dirty_get(p, cfd, 0xfffffffffffff000ULL, PG, PG, 8, 0);
	unmap_dirty(p, cfd, 0x200000, 6 * PG, PG, 8, 0);
	unmap_dirty(p, cfd, 0x208000, 2 * PG, 2 * PG, 8, 0);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_get(p, cfd, 0x208000, 2 * PG, PG, 8, 0);
	unmap_dirty(p, cfd, 0x208000, 2 * PG, PG, 8, 0);
	dirty_simple(p, cfd, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	dma_avail(p, cfd);

	/* ---- UPDATE_VADDR ---- */
	p = "vaddr";
	map_dma(p, cfd, F_RW, buf, "buf", 0x300000, 2 * PG);
	map_dma(p, cfd, F_VADDR, rw8, "rw8", 0x300000, 2 * PG);
	unmap_dma(p, cfd, U_VADDR, 0x300000, 2 * PG);
	unmap_dma(p, cfd, U_VADDR, 0x300000, 2 * PG);
	map_dma(p, cfd, F_VADDR, rw8, "rw8", 0x300000, PG);
	map_dma(p, cfd, F_VADDR, rw8, "rw8", 0x400000, 2 * PG);
	map_dma(p, cfd, F_VADDR | F_READ, rw8, "rw8", 0x300000, 2 * PG);
	map_dma(p, cfd, F_VADDR, rw8, "rw8", 0x300000, 2 * PG);
	map_dma(p, cfd, F_VADDR, rw8, "rw8", 0x300000, 2 * PG);
	unmap_dma(p, cfd, U_ALL | U_VADDR, 0, 0);
	map_dma(p, cfd, F_VADDR, buf, "buf", 0x300000, 2 * PG);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, 0, 0x300000, 2 * PG);

	/* ---- MAP_DMA errors ---- */
	p = "errors";
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0x101000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xff000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xff000, 0x4000);
	map_dma(p, cfd, F_RW, buf, "buf", 0x102000, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0x100800, PG);
	map_dma(p, cfd, F_RW, buf + 0x800, "buf+0x800", 0x110000, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0x110000, 0x1800);
	map_dma(p, cfd, F_RW, buf, "buf", 0x110000, 0x800);
	map_dma(p, cfd, F_RW, buf, "buf", 0x110000, 0);
	map_dma(p, cfd, 0, buf, "buf", 0x110000, PG);
	map_dma(p, cfd, F_VADDR | F_READ, buf, "buf", 0x110000, PG);
	map_dma(p, cfd, F_RW | 0x8, buf, "buf", 0x110000, PG);
	map_dma(p, cfd, 0x80000000u | F_RW, buf, "buf", 0x110000, PG);
	map_raw(p, cfd, 31, F_RW, buf, "buf", 0x110000, PG);
	map_raw(p, cfd, 40, F_RW, buf, "buf", 0x110000, PG);
	unmap_dma(p, cfd, 0, 0x110000, PG);
	/* wrap-around */
	map_dma(p, cfd, F_RW, buf, "buf", 0xfffffffffffff000ULL, 2 * PG);
	map_dma(p, cfd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x110000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfffffffffffff000ULL, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0x110000, 0xfffffffffffff000ULL);
	/* which comes first: the flags, the alignment or the wrap? */
	map_dma(p, cfd, 0, buf, "buf", 0xfffffffffffff000ULL, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfffffffffffff800ULL, PG);
	/* the MSI window and its edges */
	map_dma(p, cfd, F_RW, buf, "buf", 0xfee00000, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfeeff000, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfedff000, 2 * PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfeeff000, 2 * PG);
	map_dma(p, cfd, F_RW, big, "big", 0xfedff000, 0x102000);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfedff000, PG);
	map_dma(p, cfd, F_RW, buf, "buf", 0xfef00000, PG);
	/* overlap beats the range check */
	map_dma(p, cfd, F_RW, big, "big", 0xfedfe000, 0x102000);
	unmap_dma(p, cfd, 0, 0xfedff000, PG);
	unmap_dma(p, cfd, 0, 0xfef00000, PG);
	/* the aperture (its end read from IOVA_RANGE above) */
	{
		char text[64];

		snprintf(text, sizeof(text), "0x%llx", (ull)end);
		note("errors: aperture end", "%s", text);
	}
	map_dma("errors: at aperture_end+1", cfd, F_RW, buf, "buf", end + 1, PG);
	map_dma("errors: across aperture_end", cfd, F_RW, buf, "buf",
		end + 1 - PG, 2 * PG);
	map_dma("errors: last page", cfd, F_RW, buf, "buf", end + 1 - PG, PG);
	map_dma("errors: across aperture_end", cfd, F_RW, buf, "buf",
		end + 1 - PG, 2 * PG);
	map_dma("errors: at 2^48", cfd, F_RW, buf, "buf", 1ULL << 48, PG);
	unmap_dma("errors: last page", cfd, 0, end + 1 - PG, PG);
	/* user memory */
	map_dma(p, cfd, F_RW, hole, "hole", 0x120000, PG);
	map_dma(p, cfd, F_READ, hole, "hole", 0x120000, PG);
	map_dma(p, cfd, F_RW, half, "rw_then_prot_none", 0x120000, 2 * PG);
	map_dma(p, cfd, F_RW, half, "rw_then_prot_none", 0x140000, PG);
	unmap_dma(p, cfd, 0, 0x140000, PG);
	map_dma(p, cfd, F_RW, none, "prot_none", 0x120000, PG);
	map_dma(p, cfd, F_READ, none, "prot_none", 0x120000, PG);
	map_dma(p, cfd, F_RW, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, cfd, F_WRITE, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, cfd, F_READ, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, cfd, F_RW, (void *)(uintptr_t)PG, "0x1000", 0x130000, PG);
	map_dma(p, cfd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x130000, PG);
	/* nothing of the failed ones was left behind */
	unmap_dma(p, cfd, 0, 0x120000, 0x20000);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, U_ALL, 0, 0);

	/* ---- UNMAP_DMA errors and empty ranges ---- */
	p = "unmap";
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 4 * PG);
	unmap_dma(p, cfd, 0, 0x200000, 4 * PG);
	unmap_dma(p, cfd, 0, 0x0, PG);
	unmap_dma(p, cfd, 0, 0x100800, PG);
	unmap_dma(p, cfd, 0, 0x100000, 0x800);
	unmap_dma(p, cfd, 0, 0x100000, 0);
	unmap_dma(p, cfd, 0, 0xfffffffffffff000ULL, 2 * PG);
	unmap_dma(p, cfd, 0x8, 0x100000, 4 * PG);
	unmap_dma(p, cfd, U_ALL | U_DIRTY, 0, 0);
	unmap_dma(p, cfd, 0, 0x101000, PG);
	unmap_dma(p, cfd, 0, 0x100000, 3 * PG);
	unmap_dma(p, cfd, 0, 0x100000, 4 * PG);
	unmap_dma(p, cfd, 0, 0x100000, 4 * PG);
	dma_avail(p, cfd);

	/* ---- the v2 table ---- */
	unmap_table("v2", cfd, buf);

	/* ---- the same table on a type1 (v1) container ---- */
	p = "v1";
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	ioc("v1: GROUP_UNSET_CONTAINER(from v2)", gfd,
		VFIO_GROUP_UNSET_CONTAINER, NULL);
	get_info("v1: old container", cfd, 16, 0);
	cfd2 = open_report("v1: open " CONTAINER " (second container)",
			 CONTAINER, O_RDWR);
	if (cfd2 < 0)
		return 1;
	set_container(p, gfd, cfd2);
	set_iommu(p, cfd2, VFIO_TYPE1_IOMMU);
	check_ext(p, cfd2, VFIO_TYPE1_IOMMU, "TYPE1");
	check_ext(p, cfd2, VFIO_TYPE1v2_IOMMU, "TYPE1v2");
	check_ext(p, cfd2, VFIO_UNMAP_ALL, "UNMAP_ALL");
	check_ext(p, cfd2, VFIO_UPDATE_VADDR, "UPDATE_VADDR");
	get_info(p, cfd2, 24, 0);
	dma_avail(p, cfd2);
	unmap_table("v1", cfd2, buf);
	dirty_simple(p, cfd2, VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	dirty_simple(p, cfd2, 0);
	map_dma(p, cfd2, F_RW, buf, "buf", 0x1000, 2 * PG);
	unmap_dirty(p, cfd2, 0x1000, 2 * PG, PG, 8, 0);
	unmap_dma(p, cfd2, U_VADDR, 0x1000, 2 * PG);
	map_dma(p, cfd2, F_VADDR, buf, "buf", 0x1000, 2 * PG);
	unmap_dma(p, cfd2, 0, 0x1000, PG);
	unmap_dma(p, cfd2, 0, 0x0, 0x2000);
	map_dma(p, cfd2, F_RW, buf, "buf", 0x1000, 2 * PG);
	map_dma(p, cfd2, F_RW, buf, "buf", 0x4000, 2 * PG);
	unmap_dma(p, cfd2, 0, 0x2000, 0x4000);
	unmap_dma(p, cfd2, 0, 0x1000, 0x4000);
	unmap_dma(p, cfd2, U_ALL, 0, 0);
	map_dma(p, cfd2, F_RW, buf, "buf", 0x100000, 2 * PG);
	ioc("v1: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER,
		NULL);
	get_info(p, cfd2, 16, 0);
	close_report("v1: close second container", cfd2);

	/* ---- group exclusivity and lifetime ---- */
	p = "group";
	gfd2 = open_report("group: open " GROUP " (second open)", GROUP, O_RDWR);
	if (gfd2 >= 0)
		close_report("group: close second open", gfd2);
	set_container(p, gfd, cfd);
	set_iommu(p, cfd, VFIO_TYPE1v2_IOMMU);
	dma_avail(p, cfd);
	map_dma(p, cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	dma_avail(p, cfd);
	close_report("group: close group (attached, one mapping)", gfd);
	get_info("group: after close", cfd, 16, 0);
	check_ext("group: after close", cfd, VFIO_UPDATE_VADDR, "UPDATE_VADDR");
	gfd = open_report("group: reopen " GROUP, GROUP, O_RDWR);
	if (gfd < 0)
		return 1;
	group_status("group: reopened", gfd);
	gfd2 = open_report("group: open " GROUP " (second open)", GROUP, O_RDWR);
	if (gfd2 >= 0)
		close_report("group: close second open", gfd2);
	set_container("group: reopened", gfd, cfd);
	set_iommu("group: reopened", cfd, VFIO_TYPE1v2_IOMMU);
	dma_avail("group: reopened", cfd);
	unmap_dma("group: reopened", cfd, 0, 0x100000, 2 * PG);
	map_dma("group: reopened", cfd, F_RW, buf, "buf", 0x100000, 2 * PG);
	close_report("group: close container (group attached)", cfd);
	close_report("group: close group", gfd);
	gfd = open_report("group: reopen " GROUP " (after both closed)", GROUP, O_RDWR);
	if (gfd >= 0) {
		group_status("group: last", gfd);
		close_report("group: close group", gfd);
	}
	return 0;
}
