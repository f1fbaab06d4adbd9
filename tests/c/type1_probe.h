/*
 * type1_probe.h - the helpers the type1 and iommufd-compat fidelity probes share: labelled
 * one-line reports (each label unique), map/unmap wrappers that print what was written back,
 * and a GET_INFO capability-chain printer. Include after <linux/vfio.h> and "probe.h", with
 * PG (the page size) and GROUP defined.
 */
#ifndef IOASIDFS_TYPE1_PROBE_H
#define IOASIDFS_TYPE1_PROBE_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "labels.h"

#define F_READ VFIO_DMA_MAP_FLAG_READ
#define F_WRITE VFIO_DMA_MAP_FLAG_WRITE
#define F_RW (F_READ | F_WRITE)
#define F_VADDR VFIO_DMA_MAP_FLAG_VADDR
#define U_DIRTY VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
#define U_ALL VFIO_DMA_UNMAP_FLAG_ALL
#define U_VADDR VFIO_DMA_UNMAP_FLAG_VADDR

#define UNUSED __attribute__((unused))

typedef unsigned long long ull;


/* Anonymous memory, populated (written) before any protection change. */
static unsigned char *alloc_pages(size_t pages, int prot)
{
	unsigned char *p;

	p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	memset(p, 0x5a, pages * PG);
	if (prot != (PROT_READ | PROT_WRITE) && mprotect(p, pages * PG, prot)) {
		perror("mprotect");
		exit(2);
	}
	return p;
}

static const char *map_flags(uint32_t f)
{
	static char buf[64];

	switch (f) {
	case 0: return "0";
	case F_READ: return "R";
	case F_WRITE: return "W";
	case F_RW: return "RW";
	case F_VADDR: return "VADDR";
	case F_VADDR | F_READ: return "VADDR|R";
	default:
		snprintf(buf, sizeof(buf), "0x%x", f);
		return buf;
	}
}

/*
 * MAP_DMA.  The kernel writes nothing back; the line says so if the struct
 * changed.  'vname' names the user address (never printed as a number).
 */
static long map_raw(const char *p, int cfd, uint32_t argsz, uint32_t flags,
		    const void *vaddr, const char *vname, uint64_t iova,
		    uint64_t size)
{
	struct vfio_iommu_type1_dma_map m, copy;
	char what[256];
	long r;
	int e;

	memset(&m, 0, sizeof(m));
	m.argsz = argsz;
	m.flags = flags;
	m.vaddr = (uintptr_t)vaddr;
	m.iova = iova;
	m.size = size;
	copy = m;
	if (argsz == sizeof(m))
		snprintf(what, sizeof(what),
			 "%s: MAP_DMA(%s,vaddr=%s,iova=0x%llx,size=0x%llx)", p,
			 map_flags(flags), vname, (ull)iova, (ull)size);
	else
		snprintf(what, sizeof(what),
			 "%s: MAP_DMA(argsz=%u,%s,vaddr=%s,iova=0x%llx,size=0x%llx)",
			 p, argsz, map_flags(flags), vname, (ull)iova,
			 (ull)size);
	errno = 0;
	r = ioctl(cfd, VFIO_IOMMU_MAP_DMA, &m);
	e = errno;
	if (memcmp(&m, &copy, sizeof(m)))
		strncat(what, " [struct written]", sizeof(what) - strlen(what) - 1);
	return report(what, r, e);
}

static long map_dma(const char *p, int cfd, uint32_t flags, const void *vaddr,
		    const char *vname, uint64_t iova, uint64_t size)
{
	return map_raw(p, cfd, sizeof(struct vfio_iommu_type1_dma_map), flags,
		       vaddr, vname, iova, size);
}

static const char *unmap_flags(uint32_t f)
{
	static char buf[64];

	switch (f) {
	case 0: return "0";
	case U_DIRTY: return "GET_DIRTY_BITMAP";
	case U_ALL: return "ALL";
	case U_VADDR: return "VADDR";
	case U_ALL | U_VADDR: return "ALL|VADDR";
	case U_ALL | U_DIRTY: return "ALL|GET_DIRTY_BITMAP";
	default:
		snprintf(buf, sizeof(buf), "0x%x", f);
		return buf;
	}
}

/*
 * UNMAP_DMA; prints the size field afterwards (written back, or left as it
 * was), and flags any change to argsz, flags or iova on the same line.
 */
static long unmap_dma(const char *p, int cfd, uint32_t flags, uint64_t iova,
		      uint64_t size)
{
	struct vfio_iommu_type1_dma_unmap u;
	char what[256];
	long r;

	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.flags = flags;
	u.iova = iova;
	u.size = size;
	snprintf(what, sizeof(what), "%s: UNMAP_DMA(%s,iova=0x%llx,size=0x%llx)",
		 p, unmap_flags(flags), (ull)iova, (ull)size);
	errno = 0;
	r = ioctl(cfd, VFIO_IOMMU_UNMAP_DMA, &u);
	report(what, r, errno);
	if (u.argsz != sizeof(u) || u.flags != flags || u.iova != iova)
		printf("%s.size = 0x%llx [argsz/flags/iova = %u/0x%x/0x%llx]\n",
		       cur, (ull)u.size, u.argsz, u.flags, (ull)u.iova);
	else
		printf("%s.size = 0x%llx\n", cur, (ull)u.size);
	return r;
}

static uint32_t rd32(const unsigned char *b, size_t off)
{
	uint32_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

static uint64_t rd64(const unsigned char *b, size_t off)
{
	uint64_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

static uint16_t rd16(const unsigned char *b, size_t off)
{
	uint16_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

#define INFO_BUF 4096
static unsigned char info[INFO_BUF];
static uint64_t aperture_end;	/* last IOVA of the last IOVA_RANGE range */

/* Append to a line buffer. */
static void cat(char *line, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void cat(char *line, size_t len, const char *fmt, ...)
{
	size_t used = strlen(line);
	va_list ap;

	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(line + used, len - used, fmt, ap);
	va_end(ap);
}

/*
 * The capability chain of a GET_INFO answer of 'len' bytes, always as four
 * lines: the chain (offset, id, version, next of each capability), then
 * MIGRATION, DMA_AVAIL and IOVA_RANGE (or "absent").  'label' is the
 * GET_INFO line's label.
 */
static void print_caps(const char *label, uint32_t first, uint32_t len)
{
	char chain[512] = "", mig[256] = "absent", avail[64] = "absent";
	char iova[1024] = "absent";
	uint32_t off = first, n, i;
	int count = 0;

	aperture_end = 0;
	if (first == 0 || first == 0xa5a5a5a5u)
		cat(chain, sizeof(chain), "none");
	while (off && off != 0xa5a5a5a5u) {
		uint16_t id, ver;
		uint32_t next;

		if (off < 24 || off + 8 > len || ++count > 16) {
			cat(chain, sizeof(chain), "%s@%u outside",
			    count > 1 ? " " : "", off);
			break;
		}
		id = rd16(info, off);
		ver = rd16(info, off + 2);
		next = rd32(info, off + 4);
		cat(chain, sizeof(chain), "%s@%u id=%u version=%u next=%u",
		    count > 1 ? " " : "", off, id, ver, next);
		switch (id) {
		case VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION:
			snprintf(mig, sizeof(mig),
				 "flags=0x%x pgsize_bitmap=0x%llx max_dirty_bitmap_size=0x%llx",
				 rd32(info, off + 8), (ull)rd64(info, off + 16),
				 (ull)rd64(info, off + 24));
			break;
		case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
			snprintf(avail, sizeof(avail), "avail=%u",
				 rd32(info, off + 8));
			break;
		case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
			n = rd32(info, off + 8);
			snprintf(iova, sizeof(iova), "nr_iovas=%u reserved=0x%x", n,
				 rd32(info, off + 12));
			for (i = 0; i < n && i < 16 && off + 16 + 16 * (i + 1) <= len;
			     i++) {
				uint64_t st = rd64(info, off + 16 + 16 * i);
				uint64_t e = rd64(info, off + 24 + 16 * i);

				cat(iova, sizeof(iova), " [0x%llx, 0x%llx]",
				    (ull)st, (ull)e);
				aperture_end = e;
			}
			break;
		default:
			break;
		}
		off = next;
	}
	printf("%s.caps = %s\n", label, chain);
	printf("%s.MIGRATION = %s\n", label, mig);
	printf("%s.DMA_AVAIL = %s\n", label, avail);
	printf("%s.IOVA_RANGE = %s\n", label, iova);
}

/*
 * GET_INFO with the given argsz into a buffer pre-filled with 0xa5, so that
 * bytes the kernel leaves alone show as 0xa5a5a5a5.  The same lines are
 * printed whether or not the call succeeds.  Returns the argsz written back
 * (0 on failure).
 */
static UNUSED uint32_t get_info(const char *p, int cfd, uint32_t argsz,
				int walk)
{
	char what[160], label[512];
	uint32_t out, co;
	long r;

	memset(info, 0xa5, sizeof(info));
	memcpy(info, &argsz, sizeof(argsz));
	snprintf(what, sizeof(what), "%s: GET_INFO(argsz=%u)", p, argsz);
	r = ioc(what, cfd, VFIO_IOMMU_GET_INFO, info);
	snprintf(label, sizeof(label), "%s", cur);
	out = rd32(info, 0);
	co = rd32(info, 16);
	printf("%s.argsz = %u\n", label, out);
	printf("%s.flags = 0x%x\n", label, rd32(info, 4));
	printf("%s.iova_pgsizes = 0x%llx\n", label, (ull)rd64(info, 8));
	printf("%s.cap_offset = 0x%x\n", label, co);
	printf("%s.u32@20 = 0x%x\n", label, rd32(info, 20));
	if (argsz > 24)
		printf("%s.u32@24 = 0x%x\n", label, rd32(info, 24));
	if (walk)
		print_caps(label, co, argsz < INFO_BUF ? argsz : INFO_BUF);
	return r < 0 ? 0 : out;
}

/* The IOMMU's address width, from the end of the last IOVA range. */
static UNUSED void address_width(const char *p)
{
	char label[160], text[64];
	int bits = 0;

	while (bits < 64 && (aperture_end >> bits))
		bits++;
	snprintf(label, sizeof(label), "%s: IOVA_RANGE address width", p);
	if (aperture_end)
		snprintf(text, sizeof(text), "%d bits", bits);
	else
		snprintf(text, sizeof(text), "unknown");
	note(label, "%s", text);
}

/* Only the DMA_AVAIL capability, as one line. */
static UNUSED void dma_avail(const char *p, int cfd)
{
	uint32_t off, argsz = INFO_BUF;
	char label[160], text[64] = "no DMA_AVAIL capability";
	int count = 0;

	memset(info, 0, sizeof(info));
	memcpy(info, &argsz, sizeof(argsz));
	errno = 0;
	if (ioctl(cfd, VFIO_IOMMU_GET_INFO, info)) {
		snprintf(text, sizeof(text), "GET_INFO -1 %s", errname(errno));
	} else {
		for (off = rd32(info, 16);
		     off && off + 12 <= INFO_BUF && count < 16;
		     off = rd32(info, off + 4), count++) {
			if (rd16(info, off) == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
				snprintf(text, sizeof(text), "%u",
					 rd32(info, off + 8));
				break;
			}
		}
	}
	snprintf(label, sizeof(label), "%s: DMA_AVAIL.avail", p);
	note(label, "%s", text);
}

static UNUSED void group_status(const char *p, int gfd)
{
	struct vfio_group_status st;
	char what[160];

	memset(&st, 0, sizeof(st));
	st.argsz = sizeof(st);
	snprintf(what, sizeof(what), "%s: GROUP_GET_STATUS", p);
	ioc(what, gfd, VFIO_GROUP_GET_STATUS, &st);
	printf("%s.flags = 0x%x\n", cur, st.flags);
}

static UNUSED long set_container(const char *p, int gfd, int cfd)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: GROUP_SET_CONTAINER", p);
	return ioc(what, gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
}

static UNUSED long set_iommu(const char *p, int cfd, unsigned long type)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: SET_IOMMU(%lu)", p, type);
	return ioc_val(what, cfd, VFIO_SET_IOMMU, type);
}

static UNUSED void check_ext(const char *p, int cfd, unsigned long ext,
			     const char *name)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: CHECK_EXTENSION(%s)", p, name);
	ioc_val(what, cfd, VFIO_CHECK_EXTENSION, ext);
}

#endif /* IOASIDFS_TYPE1_PROBE_H */
