/*
 * ioasid_native.c - a VFIO group attached to an iommufd (/dev/iommu, and the project's alias
 * /dev/ioasid) with VFIO_GROUP_SET_CONTAINER, and its compat IOAS driven through the *native*
 * iommufd ioctls, with the edu device (0000:00:01.0, its group found in sysfs) really doing
 * DMA through the mappings:
 *
 *   - SET_CONTAINER creates the compat IOAS (IOMMU_VFIO_IOAS GET finds it); IOVA_RANGES before
 *     and after GROUP_GET_DEVICE_FD (which binds the device and attaches it to the compat
 *     IOAS: the domain's aperture minus the MSI window, the IOMMU page alignment);
 *   - IOMMU_IOAS_MAP at a fixed IOVA and at a kernel-chosen one; edu DMA RAM -> device ->
 *     RAM through them (the bytes checked);
 *   - a VFIO_IOMMU_MAP_DMA on the iommufd fd is an area of the same IOAS: DMA reaches it and
 *     IOMMU_IOAS_UNMAP removes it; an IOMMU_IOAS_MAP area is removed by VFIO_IOMMU_UNMAP_DMA;
 *   - IOMMU_IOAS_COPY into a second IOAS; IOMMU_VFIO_IOAS SET / GET / CLEAR and what they
 *     change (where compat maps land, not where the device is attached);
 *   - IOMMU_IOAS_UNMAP, then edu DMA to and from the unmapped IOVA: blocked (memory
 *     untouched; the device reads zeros).  The IOMMU fault itself never reaches the program
 *     (the kernel logs it; ioasidfs traces it);
 *   - IOMMU_DESTROY of what the open device holds (EBUSY), the compat IOAS destroyed once the
 *     device is closed (GET_DEVICE_FD then has no IOAS to attach to), the device reopened on
 *     the copied IOAS chosen with VFIO_IOAS SET, DMA through the copies;
 *   - teardown in both orders: device, UNSET_CONTAINER, group, iommufd; and the iommufd first,
 *     UNSET_CONTAINER with the device still open (it keeps DMAing through its IOAS).
 *
 * Output: one line per observation, "<what> = <value>" (calls: the return value or
 * "-1 <ERRNONAME>"; written-back fields as "<what>.<field> = <value>"), labels unique
 * (labels.h).  Nothing printed depends on addresses, pids or timing: buffers sit at fixed
 * offsets of a 2 MiB-aligned region, so the kernel's IOVA choices are the same every run.
 * fd numbers are printed: the program must start with only 0, 1 and 2 open.  The expected
 * output (tests/expected/ioasid_native.txt) is derived from the upstream kernel source, line by
 * line (ioasid_native.notes.md); no kernel with iommufd was available to record it.
 *
 * Build: gcc -O2 -Wall -Werror -o ioasid_native ioasid_native.c   (the iommufd uAPI comes from
 * iommufd_cdev.h when the system headers lack it)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"
#include "labels.h"
#include "iommufd_cdev.h"
#include "dma_pattern.h"
#include "edu_regs.h"

#define BDF "0000:00:01.0"
#define BUFSZ 0x2000UL
#define XFER 0x800		/* inside the edu's 4 KiB buffer */

typedef unsigned long long ull;

#define RW (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)

static int dev = -1;		/* the device fd the edu helpers use */
static char group_path[64];

/* ------------------------------------------------------------------ iommufd */

static uint32_t ioas_alloc(const char *what, int fd)
{
	struct iommu_ioas_alloc a;

	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.out_ioas_id = 0xffffffff;
	if (ioc(what, fd, IOMMU_IOAS_ALLOC, &a) == 0)
		printf("%s.out_ioas_id = %u\n", cur, a.out_ioas_id);
	return a.out_ioas_id;
}

/* IOMMU_IOAS_MAP; 'fixed' 0 lets the kernel choose (the iova field is then ignored). */
static uint64_t ioas_map(const char *what, int fd, uint32_t ioas, void *va, uint64_t iova,
			 uint64_t len, int fixed)
{
	struct iommu_ioas_map m;

	memset(&m, 0, sizeof(m));
	m.size = sizeof(m);
	m.flags = RW | (fixed ? IOMMU_IOAS_MAP_FIXED_IOVA : 0);
	m.ioas_id = ioas;
	m.user_va = (uintptr_t)va;
	m.length = len;
	m.iova = fixed ? iova : 0xdead000;
	if (ioc(what, fd, IOMMU_IOAS_MAP, &m) == 0)
		printf("%s.iova = 0x%llx\n", cur, (ull)m.iova);
	return m.iova;
}

static void ioas_unmap(const char *what, int fd, uint32_t ioas, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_unmap u;

	memset(&u, 0, sizeof(u));
	u.size = sizeof(u);
	u.ioas_id = ioas;
	u.iova = iova;
	u.length = len;
	if (ioc(what, fd, IOMMU_IOAS_UNMAP, &u) == 0)
		printf("%s.length = 0x%llx\n", cur, (ull)u.length);
}

/* IOVA_RANGES with room for 'room' ranges (at most 4); prints what came back. */
static void iova_ranges(const char *what, int fd, uint32_t ioas, uint32_t room)
{
	struct iommu_iova_range r[4];
	struct iommu_ioas_iova_ranges q;
	uint32_t i;
	long ret;

	memset(r, 0xa5, sizeof(r));
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.ioas_id = ioas;
	q.num_iovas = room;
	q.allowed_iovas = (uintptr_t)r;
	q.out_iova_alignment = 0xa5a5a5a5a5a5a5a5ULL;
	ret = ioc(what, fd, IOMMU_IOAS_IOVA_RANGES, &q);
	if (ret && errno != EMSGSIZE)
		return;
	printf("%s.num_iovas = %u\n", cur, q.num_iovas);
	printf("%s.out_iova_alignment = 0x%llx\n", cur, (ull)q.out_iova_alignment);
	for (i = 0; i < room && i < q.num_iovas; i++)
		printf("%s.range[%u] = 0x%llx-0x%llx\n", cur, i, (ull)r[i].start,
		       (ull)r[i].last);
}

static void ioas_copy(const char *what, int fd, uint32_t dst, uint64_t dst_iova, uint32_t src,
		      uint64_t src_iova, uint64_t len, int fixed)
{
	struct iommu_ioas_copy c;

	memset(&c, 0, sizeof(c));
	c.size = sizeof(c);
	c.flags = RW | (fixed ? IOMMU_IOAS_MAP_FIXED_IOVA : 0);
	c.dst_ioas_id = dst;
	c.src_ioas_id = src;
	c.length = len;
	c.dst_iova = fixed ? dst_iova : 0xdead000;
	c.src_iova = src_iova;
	if (ioc(what, fd, IOMMU_IOAS_COPY, &c) == 0)
		printf("%s.dst_iova = 0x%llx\n", cur, (ull)c.dst_iova);
}

static uint32_t vfio_ioas(const char *what, int fd, uint16_t op, uint32_t id, uint16_t rsvd)
{
	struct iommu_vfio_ioas v;

	memset(&v, 0, sizeof(v));
	v.size = sizeof(v);
	v.op = op;
	v.ioas_id = id;
	v.__reserved = rsvd;
	if (ioc(what, fd, IOMMU_VFIO_IOAS, &v) == 0 && op == IOMMU_VFIO_IOAS_GET)
		printf("%s.ioas_id = %u\n", cur, v.ioas_id);
	return v.ioas_id;
}

static void destroy(const char *what, int fd, uint32_t id)
{
	struct iommu_destroy d = { .size = sizeof(d), .id = id };

	ioc(what, fd, IOMMU_DESTROY, &d);
}

/* VFIO_IOMMU_MAP_DMA / UNMAP_DMA on the iommufd fd: the compat IOAS. */
static void compat_map(const char *what, int fd, void *va, uint64_t iova, uint64_t len)
{
	struct vfio_iommu_type1_dma_map m;

	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	m.vaddr = (uintptr_t)va;
	m.iova = iova;
	m.size = len;
	ioc(what, fd, VFIO_IOMMU_MAP_DMA, &m);
}

static void compat_unmap(const char *what, int fd, uint64_t iova, uint64_t len)
{
	struct vfio_iommu_type1_dma_unmap u;

	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.iova = iova;
	u.size = len;
	if (ioc(what, fd, VFIO_IOMMU_UNMAP_DMA, &u) == 0)
		printf("%s.size = 0x%llx\n", cur, (ull)u.size);
}

/* ------------------------------------------------------------------ groups, devices */

static void set_container(const char *what, int gfd, int fd)
{
	ioc(what, gfd, VFIO_GROUP_SET_CONTAINER, &fd);
}

static int get_device_fd(const char *what, int gfd)
{
	long r;

	errno = 0;
	r = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, BDF);
	report(what, r, errno);
	return (int)r;
}

/* Memory space and bus master on, as a driver does before DMA. */
static void enable_device(const char *what, int dfd)
{
	uint16_t cmd = 0x6;
	long r;

	errno = 0;
	r = pwrite(dfd, &cmd, 2, CFG + 4);
	report(what, r, errno);
}

/* ------------------------------------------------------------------ edu DMA */

static int reg_write(unsigned int off, uint32_t v)
{
	return pwrite(dev, &v, 4, BAR0 + off) == 4;
}

/*
 * One transfer of XFER bytes: program it, start it, wait (bounded) for RUN to clear.  One
 * line: "done", "timeout" or "register access failed".
 */
static void dma(const char *what, uint64_t src, uint64_t dst, uint32_t cmd)
{
	char label[200];
	const char *how = "done";
	double end;
	uint32_t v;

	snprintf(label, sizeof(label), "dma: %s: src=0x%llx dst=0x%llx cnt=0x%x cmd=0x%x", what,
		 (ull)src, (ull)dst, XFER, cmd);
	if (!reg_write(EDU_DMA_SRC, (uint32_t)src) || !reg_write(EDU_DMA_DST, (uint32_t)dst) ||
	    !reg_write(EDU_DMA_CNT, XFER) || !reg_write(EDU_DMA_CMD, cmd)) {
		note(label, "register access failed");
		return;
	}
	end = edu_now() + 5.0;
	for (;;) {
		v = edu_peek(dev, EDU_DMA_CMD);
		if (v != 0xffffffffu && !(v & DMA_RUN))
			break;
		if (edu_now() > end) {
			how = "timeout";
			break;
		}
		usleep(1000);
	}
	note(label, "%s", how);
}

/* ------------------------------------------------------------------ the flow */

int main(void)
{
	unsigned char *region, *base, *bufA, *bufB, *bufC, *bufD;
	char path[256], link[256];
	uint32_t ioas, ioas2;
	uint64_t iovaB;
	int ifd, gfd, dfd;
	ssize_t n;

	setvbuf(stdout, NULL, _IOLBF, 0);

	/*
	 * Four buffers at fixed offsets of a 2 MiB-aligned region: the kernel's IOVA allocator
	 * keeps the user address's alignment (up to the length rounded up to a power of two), so
	 * its choices depend on these offsets only.
	 */
	region = mmap(NULL, 0x400000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	base = (unsigned char *)(((uintptr_t)region + 0x1fffff) & ~(uintptr_t)0x1fffff);
	bufA = base;
	bufB = base + 0x10000;
	bufC = base + 0x20000;
	bufD = base + 0x30000;
	memset(base, 0, 0x40000);

	/* ---- find the edu's group in sysfs, as a driver does ---- */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", BDF);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		note("sysfs: " BDF " iommu_group", "readlink -1 %s", errname(errno));
		return 1;
	}
	link[n] = 0;
	note("sysfs: " BDF " iommu_group", "%s", basename(link));
	snprintf(group_path, sizeof(group_path), "/dev/vfio/%s", basename(link));

	ifd = open_report("open /dev/iommu", "/dev/iommu", O_RDWR);
	gfd = open_report("open group", group_path, O_RDWR);
	if (ifd < 0 || gfd < 0)
		return 1;

	/* ---- SET_CONTAINER with the iommufd: the compat IOAS, no domain yet ---- */
	set_container("attach: GROUP_SET_CONTAINER(/dev/iommu)", gfd, ifd);
	ioas = vfio_ioas("attach: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	iova_ranges("attach: IOAS_IOVA_RANGES(compat ioas)", ifd, ioas, 4);

	/* ---- the device: bound, attached to the compat IOAS (an automatic HWPT) ---- */
	dfd = get_device_fd("dev: GROUP_GET_DEVICE_FD(" BDF ")", gfd);
	dev = dfd;
	enable_device("dev: pwrite(config COMMAND, MEM|MASTER)", dfd);
	vfio_ioas("dev: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	iova_ranges("dev: IOAS_IOVA_RANGES(num_iovas=0)", ifd, ioas, 0);
	iova_ranges("dev: IOAS_IOVA_RANGES(num_iovas=4)", ifd, ioas, 4);

	/* ---- native maps: a fixed IOVA and a kernel-chosen one; DMA through them ---- */
	ioas_map("map: IOAS_MAP(bufA,FIXED iova=0x100000,0x2000)", ifd, ioas, bufA, 0x100000,
		 BUFSZ, 1);
	iovaB = ioas_map("map: IOAS_MAP(bufB,kernel-chosen,0x2000)", ifd, ioas, bufB, 0, BUFSZ, 0);
	ioas_map("map: IOAS_MAP(bufB,FIXED iova=0x101000,0x2000)", ifd, ioas, bufB, 0x101000,
		 BUFSZ, 1);
	ioas_map("map: IOAS_MAP(bufB,FIXED iova=0xfee00000,0x2000)", ifd, ioas, bufB, 0xfee00000,
		 BUFSZ, 1);
	fill(bufA, BUFSZ, 1);
	memset(bufB, 0xcc, BUFSZ);
	dma("bufA -> device", 0x100000, EDU_BUF, DMA_RUN);
	dma("device -> bufB", EDU_BUF, iovaB, DMA_RUN | DMA_TO_RAM);
	describe("dma: bufB[0x0000..0x0800]", bufB, XFER, 1, 0xcc);
	describe("dma: bufB[0x0800..0x2000]", bufB + XFER, BUFSZ - XFER, 1, 0xcc);

	/* ---- a VFIO compat map is an area of the same IOAS ---- */
	compat_map("compat: MAP_DMA(bufC,iova=0x300000,0x2000)", ifd, bufC, 0x300000, BUFSZ);
	memset(bufC, 0xcc, BUFSZ);
	dma("device -> bufC (compat map)", EDU_BUF, 0x300000, DMA_RUN | DMA_TO_RAM);
	describe("dma: bufC[0x0000..0x0800]", bufC, XFER, 1, 0xcc);
	ioas_map("compat: IOAS_MAP(bufD,FIXED iova=0x301000,0x1000)", ifd, ioas, bufD, 0x301000,
		 0x1000, 1);
	ioas_unmap("compat: IOAS_UNMAP(0x300000,0x1000)", ifd, ioas, 0x300000, 0x1000);
	ioas_unmap("compat: IOAS_UNMAP(0x300000,0x2000)", ifd, ioas, 0x300000, BUFSZ);
	ioas_unmap("compat: IOAS_UNMAP(0x300000,0x2000) again", ifd, ioas, 0x300000, BUFSZ);
	/* ... and the other way round */
	ioas_map("compat: IOAS_MAP(bufD,FIXED iova=0x400000,0x2000)", ifd, ioas, bufD, 0x400000,
		 BUFSZ, 1);
	compat_unmap("compat: UNMAP_DMA(0x400000,0x2000)", ifd, 0x400000, BUFSZ);
	ioas_unmap("compat: IOAS_UNMAP(0x400000,0x2000)", ifd, ioas, 0x400000, BUFSZ);

	/* ---- IOMMU_IOAS_COPY into a second IOAS ---- */
	ioas2 = ioas_alloc("copy: IOAS_ALLOC", ifd);
	ioas_copy("copy: IOAS_COPY(0x100000 -> ioas2 FIXED 0x500000,0x2000)", ifd, ioas2,
		  0x500000, ioas, 0x100000, BUFSZ, 1);
	ioas_copy("copy: IOAS_COPY(0x100000 -> ioas2 kernel-chosen,0x2000)", ifd, ioas2, 0, ioas,
		  0x100000, BUFSZ, 0);
	ioas_copy("copy: IOAS_COPY(0x101000 -> ioas2 FIXED 0x600000,0x1000)", ifd, ioas2,
		  0x600000, ioas, 0x101000, 0x1000, 1);
	ioas_copy("copy: IOAS_COPY(0x100000,0x3000: a gap)", ifd, ioas2, 0x700000, ioas,
		  0x100000, 0x3000, 1);
	ioas_copy("copy: IOAS_COPY(0x100000 -> ioas2 FIXED 0x500000 again)", ifd, ioas2,
		  0x500000, ioas, 0x100000, BUFSZ, 1);
	iova_ranges("copy: IOAS_IOVA_RANGES(ioas2)", ifd, ioas2, 4);

	/* ---- IOMMU_VFIO_IOAS: which IOAS the compat ioctls use ---- */
	vfio_ioas("vfio_ioas: VFIO_IOAS(SET,ioas2)", ifd, IOMMU_VFIO_IOAS_SET, ioas2, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	compat_map("vfio_ioas: MAP_DMA(bufC,iova=0x300000,0x2000)", ifd, bufC, 0x300000, BUFSZ);
	ioas_unmap("vfio_ioas: IOAS_UNMAP(ioas,0x300000,0x2000)", ifd, ioas, 0x300000, BUFSZ);
	ioas_unmap("vfio_ioas: IOAS_UNMAP(ioas2,0x300000,0x2000)", ifd, ioas2, 0x300000, BUFSZ);
	/* the device stays attached to the first IOAS */
	memset(bufB, 0xcc, BUFSZ);
	dma("after SET: device -> bufB", EDU_BUF, iovaB, DMA_RUN | DMA_TO_RAM);
	describe("dma: after SET: bufB[0x0000..0x0800]", bufB, XFER, 1, 0xcc);
	vfio_ioas("vfio_ioas: VFIO_IOAS(SET,device id 2)", ifd, IOMMU_VFIO_IOAS_SET, 2, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(SET,99)", ifd, IOMMU_VFIO_IOAS_SET, 99, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(op=3)", ifd, 3, ioas, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(GET,__reserved=1)", ifd, IOMMU_VFIO_IOAS_GET, 0, 1);
	vfio_ioas("vfio_ioas: VFIO_IOAS(CLEAR)", ifd, IOMMU_VFIO_IOAS_CLEAR, 0, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(GET) after CLEAR", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	compat_map("vfio_ioas: MAP_DMA after CLEAR", ifd, bufC, 0x300000, BUFSZ);
	vfio_ioas("vfio_ioas: VFIO_IOAS(SET,ioas)", ifd, IOMMU_VFIO_IOAS_SET, ioas, 0);
	vfio_ioas("vfio_ioas: VFIO_IOAS(GET) #2", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);

	/* ---- IOMMU_IOAS_UNMAP, then DMA to and from the unmapped IOVA: blocked ---- */
	ioas_unmap("unmap: IOAS_UNMAP(bufB's iova,0x2000)", ifd, ioas, iovaB, BUFSZ);
	memset(bufB, 0xcc, BUFSZ);
	dma("device -> unmapped bufB iova", EDU_BUF, iovaB, DMA_RUN | DMA_TO_RAM);
	describe("dma: unmapped: bufB", bufB, BUFSZ, 1, 0xcc);
	dma("unmapped bufB iova -> device", iovaB, EDU_BUF, DMA_RUN);
	memset(bufA, 0xcc, BUFSZ);
	dma("device -> bufA", EDU_BUF, 0x100000, DMA_RUN | DMA_TO_RAM);
	describe("dma: unmapped: bufA[0x0000..0x0800] (the device's buffer)", bufA, XFER, 1, 0xcc);

	/* ---- IOMMU_DESTROY while the device is attached, and after it is closed ---- */
	destroy("destroy: IOMMU_DESTROY(ioas, device attached)", ifd, ioas);
	destroy("destroy: IOMMU_DESTROY(device id 2)", ifd, 2);
	destroy("destroy: IOMMU_DESTROY(hwpt id 3)", ifd, 3);
	close_report("destroy: close device fd", dfd);
	destroy("destroy: IOMMU_DESTROY(hwpt id 3) #2", ifd, 3);
	destroy("destroy: IOMMU_DESTROY(device id 2) #2", ifd, 2);
	destroy("destroy: IOMMU_DESTROY(ioas)", ifd, ioas);
	vfio_ioas("destroy: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	get_device_fd("destroy: GROUP_GET_DEVICE_FD (no compat ioas)", gfd);

	/* ---- the device reopened on the copied IOAS ---- */
	vfio_ioas("reopen: VFIO_IOAS(SET,ioas2)", ifd, IOMMU_VFIO_IOAS_SET, ioas2, 0);
	dfd = get_device_fd("reopen: GROUP_GET_DEVICE_FD(" BDF ")", gfd);
	dev = dfd;
	enable_device("reopen: pwrite(config COMMAND, MEM|MASTER)", dfd);
	iova_ranges("reopen: IOAS_IOVA_RANGES(ioas2)", ifd, ioas2, 4);
	destroy("reopen: IOMMU_DESTROY(ioas2)", ifd, ioas2);
	fill(bufA, BUFSZ, 2);
	dma("ioas2 0x500000 (copy of bufA) -> device", 0x500000, EDU_BUF, DMA_RUN);
	memset(bufA, 0xcc, BUFSZ);
	dma("device -> ioas2 0x2000 (copy of bufA)", EDU_BUF, 0x2000, DMA_RUN | DMA_TO_RAM);
	describe("dma: reopen: bufA[0x0000..0x0800]", bufA, XFER, 2, 0xcc);
	describe("dma: reopen: bufA[0x0800..0x2000]", bufA + XFER, BUFSZ - XFER, 2, 0xcc);

	/* ---- order 1: device, UNSET_CONTAINER, group, iommufd ---- */
	close_report("order 1: close device fd", dfd);
	ioc("order 1: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	ioc("order 1: GROUP_UNSET_CONTAINER again", gfd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	vfio_ioas("order 1: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	close_report("order 1: close group", gfd);
	close_report("order 1: close /dev/iommu", ifd);

	/* ---- order 2 (/dev/ioasid): the iommufd first, UNSET with the device open ---- */
	ifd = open_report("order 2: open /dev/ioasid", "/dev/ioasid", O_RDWR);
	gfd = open_report("order 2: open group", group_path, O_RDWR);
	if (ifd < 0 || gfd < 0)
		return 1;
	set_container("order 2: GROUP_SET_CONTAINER(/dev/ioasid)", gfd, ifd);
	dfd = get_device_fd("order 2: GROUP_GET_DEVICE_FD(" BDF ")", gfd);
	dev = dfd;
	enable_device("order 2: pwrite(config COMMAND, MEM|MASTER)", dfd);
	ioas = vfio_ioas("order 2: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	ioas_map("order 2: IOAS_MAP(bufA,FIXED iova=0x100000,0x2000)", ifd, ioas, bufA, 0x100000,
		 BUFSZ, 1);
	close_report("order 2: close /dev/ioasid", ifd);
	ioc("order 2: GROUP_UNSET_CONTAINER (device open)", gfd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	get_device_fd("order 2: GROUP_GET_DEVICE_FD (no container)", gfd);
	fill(bufA, BUFSZ, 3);
	dma("order 2: bufA -> device", 0x100000, EDU_BUF, DMA_RUN);
	memset(bufA, 0xcc, BUFSZ);
	dma("order 2: device -> bufA", EDU_BUF, 0x100000, DMA_RUN | DMA_TO_RAM);
	describe("dma: order 2: bufA[0x0000..0x0800]", bufA, XFER, 3, 0xcc);
	close_report("order 2: close group", gfd);
	close_report("order 2: close device fd", dfd);

	/* ---- nothing is left behind ---- */
	gfd = open_report("after: open group", group_path, O_RDWR);
	ifd = open_report("after: open /dev/iommu", "/dev/iommu", O_RDWR);
	set_container("after: GROUP_SET_CONTAINER(/dev/iommu)", gfd, ifd);
	vfio_ioas("after: VFIO_IOAS(GET)", ifd, IOMMU_VFIO_IOAS_GET, 0, 0);
	close_report("after: close group", gfd);
	close_report("after: close /dev/iommu", ifd);
	return 0;
}
