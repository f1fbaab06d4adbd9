/*
 * ioasid_container.c - fidelity probe for a legacy VFIO group attached to
 * an iommufd (/dev/iommu) with VFIO_GROUP_SET_CONTAINER, and for the VFIO
 * container ioctls that iommufd answers on its own fd through the
 * compatibility IOAS (drivers/iommu/iommufd/vfio_compat.c).
 *
 * Phases: the iommufd before the group is attached (no compat IOAS); the
 * group attached but no device open (a compat IOAS without any IOMMU
 * domain); the device opened with GROUP_GET_DEVICE_FD (it is bound and
 * attached to the compat IOAS, which gets the IOMMU's domain, aperture and
 * reserved regions); MAP/UNMAP through the compat IOAS and their error
 * cases; SET_IOMMU(TYPE1) (large pages off, unmaps may split); the device
 * closed; the group detached.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * plus "<what>.<field> = <value>" lines for written-back fields.  Nothing
 * printed depends on addresses, pids or timing: user addresses are named by
 * the buffer they belong to.  The program must start with only fds 0, 1
 * and 2 open.  Without iommufd (e.g. Debian's 6.1) the first open fails and
 * the program stops there.
 *
 * A label printed before gets " #n" (its n-th use), so every line is unique;
 * the same lines are printed whatever the answers, so outputs can be compared
 * line by line.
 *
 * /dev/iommu is the upstream name; this project also serves it as
 * /dev/ioasid.  Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o ioasid_container ioasid_container.c
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

#define IOMMUFD "/dev/iommu"
#define GROUP "/dev/vfio/1"
#define BDF "0000:00:01.0"
#define PG 0x1000UL

#define F_READ VFIO_DMA_MAP_FLAG_READ
#define F_WRITE VFIO_DMA_MAP_FLAG_WRITE
#define F_RW (F_READ | F_WRITE)
#define F_VADDR VFIO_DMA_MAP_FLAG_VADDR
#define U_DIRTY VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
#define U_ALL VFIO_DMA_UNMAP_FLAG_ALL
#define U_VADDR VFIO_DMA_UNMAP_FLAG_VADDR

#define UNUSED __attribute__((unused))

typedef unsigned long long ull;


/*
 * Every printed label is unique: the n-th repetition of a label gets " #n".
 * 'cur' is the (decorated) label of the last observation; the lines of the
 * fields it wrote back are "<cur>.<field> = <value>".
 */
#define SEEN_MAX 8192
static uint64_t seen_hash[SEEN_MAX];
static unsigned int seen_count[SEEN_MAX];
static char cur[512];

static const char *uniq(const char *label)
{
	uint64_t h = 1469598103934665603ULL;
	const char *s;
	unsigned int i;

	for (s = label; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	if (!h)
		h = 1;
	for (i = h % SEEN_MAX; seen_hash[i] && seen_hash[i] != h;
	     i = (i + 1) % SEEN_MAX)
		;
	seen_hash[i] = h;
	if (++seen_count[i] == 1)
		snprintf(cur, sizeof(cur), "%s", label);
	else
		snprintf(cur, sizeof(cur), "%s #%u", label, seen_count[i]);
	return cur;
}

static long report(const char *what, long ret, int err)
{
	uniq(what);
	if (ret < 0)
		printf("%s = -1 %s\n", cur, errname(err));
	else
		printf("%s = %ld\n", cur, ret);
	return ret;
}

/* A line that is not an ioctl: "<label> = <text>", label made unique. */
static void note(const char *label, const char *text)
{
	uniq(label);
	printf("%s = %s\n", cur, text);
}

static long ioc_val(const char *what, int fd, unsigned long cmd,
		    unsigned long arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	return report(what, r, errno);
}

static long ioc_ptr(const char *what, int fd, unsigned long cmd, void *arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	return report(what, r, errno);
}

static int open_node(const char *what, const char *path)
{
	int fd;

	errno = 0;
	fd = open(path, O_RDWR);
	report(what, fd, errno);
	return fd;
}

static void do_close(const char *what, int fd)
{
	long r;

	errno = 0;
	r = close(fd);
	report(what, r, errno);
}

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
	r = ioc_ptr(what, cfd, VFIO_IOMMU_GET_INFO, info);
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
	note(label, text);
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
	note(label, text);
}

static UNUSED void group_status(const char *p, int gfd)
{
	struct vfio_group_status st;
	char what[160];

	memset(&st, 0, sizeof(st));
	st.argsz = sizeof(st);
	snprintf(what, sizeof(what), "%s: GROUP_GET_STATUS", p);
	ioc_ptr(what, gfd, VFIO_GROUP_GET_STATUS, &st);
	printf("%s.flags = 0x%x\n", cur, st.flags);
}

static UNUSED long set_container(const char *p, int gfd, int cfd)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: GROUP_SET_CONTAINER", p);
	return ioc_ptr(what, gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
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

static void check_exts(const char *p, int fd)
{
	check_ext(p, fd, VFIO_TYPE1_IOMMU, "TYPE1");
	check_ext(p, fd, VFIO_TYPE1v2_IOMMU, "TYPE1v2");
	check_ext(p, fd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	check_ext(p, fd, 6, "NESTING(6)");
	check_ext(p, fd, VFIO_NOIOMMU_IOMMU, "NOIOMMU");
	check_ext(p, fd, VFIO_UNMAP_ALL, "UNMAP_ALL");
	check_ext(p, fd, VFIO_UPDATE_VADDR, "UPDATE_VADDR");
}

/* GET_INFO at 16, 24, the grown size - 1, the grown size and 4096. */
static void info_series(const char *p, int fd)
{
	uint32_t grown;

	get_info(p, fd, 16, 0);
	grown = get_info(p, fd, 24, 0);
	if (grown <= 24 || grown > INFO_BUF)
		grown = 26;	/* keep the same lines when GET_INFO fails */
	get_info(p, fd, grown - 1, 0);
	get_info(p, fd, grown, 1);
	address_width(p);
	get_info(p, fd, INFO_BUF, 1);
}

int main(void)
{
	unsigned char *buf, *big, *hole, *none, *ro, *half;
	int ifd, gfd, dfd, gfd2;
	const char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);

	buf = alloc_pages(4, PROT_READ | PROT_WRITE);
	ro = alloc_pages(2, PROT_READ);
	none = alloc_pages(2, PROT_NONE);
	half = alloc_pages(2, PROT_READ | PROT_WRITE);
	if (mprotect(half + PG, PG, PROT_NONE)) {
		perror("mprotect");
		return 2;
	}
	big = mmap(NULL, 0x200000, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (big == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	hole = alloc_pages(2, PROT_READ | PROT_WRITE);
	munmap(hole, 2 * PG);

	ifd = open_node("open " IOMMUFD, IOMMUFD);
	if (ifd < 0)
		return 0;
	gfd = open_node("open " GROUP, GROUP);
	if (gfd < 0)
		return 1;

	/* ---- no group attached: no compat IOAS ---- */
	p = "detached";
	ioc_val("detached: GET_API_VERSION", ifd, VFIO_GET_API_VERSION, 0);
	check_exts(p, ifd);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	set_iommu(p, ifd, 2);
	get_info(p, ifd, 16, 0);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, PG);
	unmap_dma(p, ifd, 0, 0x100000, PG);
	group_status(p, gfd);

	/* ---- attach the group to the iommufd ---- */
	p = "attach";
	set_container(p, gfd, ifd);
	group_status(p, gfd);
	set_container(p, gfd, ifd);
	gfd2 = open_node("attach: open " GROUP " (second open)", GROUP);
	if (gfd2 >= 0)
		do_close("attach: close second open", gfd2);

	/* ---- a compat IOAS, but no device open: no IOMMU domain ---- */
	p = "nodev";
	check_exts(p, ifd);
	set_iommu(p, ifd, 0);
	set_iommu(p, ifd, 2);
	set_iommu(p, ifd, 6);
	set_iommu(p, ifd, 9);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	info_series(p, ifd);
	/* nothing is pinned without a domain, and the alignment is 1 */
	map_dma(p, ifd, F_RW, hole, "hole", 0x100000, PG);
	map_dma(p, ifd, 0, buf, "buf", 0x200000, PG);
	map_dma(p, ifd, F_RW, buf + 0x800, "buf+0x800", 0x300800, 0x800);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- open the device: bound and attached to the compat IOAS ---- */
	p = "dev";
	dfd = ioc_ptr("dev: GROUP_GET_DEVICE_FD(" BDF ")", gfd,
		      VFIO_GROUP_GET_DEVICE_FD, (void *)BDF);
	check_exts(p, ifd);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	info_series(p, ifd);

	/* ---- the v2 unmap rules: A=[0x1000,0x3000), B=[0x3000,0x5000) ---- */
	p = "unmap";
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf + 0x2000, "buf+0x2000", 0x3000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, PG);
	unmap_dma(p, ifd, 0, 0x2000, 0x3000);
	unmap_dma(p, ifd, 0, 0x1000, 0x3000);
	unmap_dma(p, ifd, 0, 0x3000, 0x2000);
	unmap_dma(p, ifd, 0, 0x10000, PG);
	unmap_dma(p, ifd, 0, 0x0, 0x10000);
	unmap_dma(p, ifd, 0, 0x100800, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf + 0x2000, "buf+0x2000", 0x3000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x0, 0x10000);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	unmap_dma(p, ifd, U_ALL, 0, 0x1000);
	unmap_dma(p, ifd, U_VADDR, 0x1000, 2 * PG);
	unmap_dma(p, ifd, U_DIRTY, 0x1000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, 0);
	unmap_dma(p, ifd, 0, 0xfffffffffffff000ULL, 2 * PG);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- MAP_DMA errors ---- */
	p = "map";
	map_dma(p, ifd, F_VADDR, buf, "buf", 0x100000, PG);
	map_dma(p, ifd, F_RW | 0x8, buf, "buf", 0x100000, PG);
	map_raw(p, ifd, 31, F_RW, buf, "buf", 0x100000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 4 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 4 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x101000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xff000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110800, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110000, 0x1800);
	map_dma(p, ifd, F_RW, buf + 0x800, "buf+0x800", 0x110000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110000, 0);
	/* the MSI window, the aperture, wrap-around */
	map_dma(p, ifd, F_RW, buf, "buf", 0xfee00000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfedff000, 2 * PG);
	map_dma(p, ifd, F_RW, big, "big", 0xfedff000, 0x102000);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfedff000, PG);
	map_dma(p, ifd, F_RW, big, "big", 0xfedfe000, 0x102000);
	unmap_dma(p, ifd, 0, 0xfedff000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x8000000000ULL, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x7ffffff000ULL, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x7ffffff000ULL, PG);
	unmap_dma(p, ifd, 0, 0x7ffffff000ULL, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfffffffffffff000ULL, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfffffffffffff000ULL, PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x110000, 2 * PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x110000, PG);
	/* user memory */
	map_dma(p, ifd, F_RW, hole, "hole", 0x120000, PG);
	map_dma(p, ifd, F_RW, half, "rw_then_prot_none", 0x120000, 2 * PG);
	map_dma(p, ifd, F_RW, none, "prot_none", 0x120000, PG);
	map_dma(p, ifd, F_READ, none, "prot_none", 0x120000, PG);
	map_dma(p, ifd, F_RW, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_WRITE, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_READ, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)PG, "0x1000", 0x130000, PG);
	/* no READ/WRITE: iommufd accepts it, the VT-d page table does not */
	map_dma(p, ifd, 0, buf, "buf", 0x140000, PG);
	unmap_dma(p, ifd, 0, 0x120000, 0x30000);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- SET_IOMMU(TYPE1): large pages off, unmaps split areas ---- */
	p = "type1";
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, PG);
	unmap_dma(p, ifd, 0, 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 4 * PG);
	unmap_dma(p, ifd, 0, 0x2000, PG);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- close the device: the mappings stay in the IOAS ---- */
	p = "closed";
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 2 * PG);
	do_close("closed: close device", dfd);
	check_ext(p, ifd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	get_info(p, ifd, INFO_BUF, 1);
	map_dma(p, ifd, F_RW, hole, "hole", 0x200000, PG);

	/* ---- detach the group: the compat IOAS is still there ---- */
	p = "unset";
	ioc_ptr("unset: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER,
		NULL);
	group_status(p, gfd);
	ioc_ptr("unset: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER,
		NULL);
	check_ext(p, ifd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	do_close("close group", gfd);
	do_close("close " IOMMUFD, ifd);
	return 0;
}
