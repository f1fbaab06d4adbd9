/*
 * edu_driver.c - a complete userspace driver for QEMU's educational PCI
 * device (edu, 1234:11e8; QEMU docs/specs/edu.rst) through VFIO, used as a
 * fidelity probe: the same program runs on the real kernel and under
 * `ioasidfs run`, and the outputs are compared line by line.
 *
 * It does what a real driver does, in order:
 *   - discovers 0000:00:01.0 in sysfs (vendor, device, class, subsystem
 *     ids, the iommu_group link -> group number, the driver link, vfio-dev,
 *     the group's devices and reserved regions);
 *   - opens the container and the group, sets up type1v2 and gets the
 *     device fd;
 *   - asks for the device, BAR0, config and IRQ information;
 *   - reads config space (ids, command, BAR0, capability list) and turns on
 *     memory decode and bus mastering;
 *   - maps two 8 KiB buffers at IOVA 0x100000 and 0x200000;
 *   - reads the identification register, checks liveness, computes
 *     factorials (polling, then with the completion interrupt);
 *   - registers an MSI eventfd and raises / acknowledges interrupts;
 *   - DMAs a pattern RAM -> device buffer (0x40000) -> RAM, compares, and
 *     takes the DMA-done interrupt;
 *   - DMAs to and from unmapped IOVAs (an IOMMU fault: the device sees a
 *     completed transfer, memory is untouched);
 *   - the same interrupts over INTx (auto-masked, unmasked by the driver);
 *   - VFIO_DEVICE_RESET, unmaps, closes.
 *
 * Output: one line per observation, "<what> = <value>" (ioctls and
 * syscalls: the return value, or "-1 <ERRNONAME>"; registers in hex).  A
 * label printed before gets " #n", so every line is unique, and the same
 * lines are printed whatever the answers (a failed step prints its error
 * and the dependent lines still appear).  Nothing printed depends on
 * addresses, pids or timing; waits are bounded and only their outcome is
 * printed.  The program must start with only fds 0, 1 and 2 open.
 *
 * Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o edu_driver edu_driver.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"
#include "labels.h"
#include "edu_regs.h"

#define BDF "0000:00:01.0"
#define SYSDEV "/sys/bus/pci/devices/" BDF
#define PG 0x1000UL

typedef unsigned long long ull;

/*
 * The edu's registers are in edu_regs.h. Transfers stay inside the 4 KiB buffer without reaching its end: QEMU
 * before 8.0 (the reference VM runs 7.2) aborts on a transfer that ends
 * exactly at 0x41000 (an off-by-one in edu_check_range, fixed by "hw/misc/
 * edu: fix 2 off-by-one errors").
 */
#define XFER		0x800

#define IOVA1 0x100000ULL
#define IOVA2 0x200000ULL
#define IOVA_HOLE 0x300000ULL
#define BUFSZ 0x2000UL

/* ------------------------------------------------------------------ */
/* sysfs                                                               */

/*
 * The sysfs answers are folded into a few lines on purpose: until the fake
 * sysfs exists, the host's own /sys answers (another device may sit at
 * 0000:00:01.0), and a line must not match the kernel's by accident.
 */

/* One attribute's first line ("-1 ERRNO" on failure), appended to 'out'. */
static void attr_cat(char *out, size_t len, const char *attr)
{
	char path[256], buf[256];
	FILE *f;
	char *nl;

	snprintf(path, sizeof(path), SYSDEV "/%s", attr);
	errno = 0;
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		snprintf(buf, sizeof(buf), "-1 %s", errname(errno ? errno : EIO));
	} else {
		nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
	}
	if (f)
		fclose(f);
	snprintf(out + strlen(out), len - strlen(out), "%s%s=%s",
		 out[0] ? " " : "", attr, buf);
}

/*
 * A symlink of the device directory: its target (or "-1 ERRNO") into
 * 'out', its last component into 'base' ("" on failure).
 */
static void link_str(const char *attr, char *out, size_t len, char *base,
		     size_t blen)
{
	char path[256], target[PATH_MAX];
	const char *slash;
	ssize_t n;

	base[0] = 0;
	snprintf(path, sizeof(path), SYSDEV "/%s", attr);
	errno = 0;
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0) {
		snprintf(out, len, "-1 %s", errname(errno));
		return;
	}
	target[n] = 0;
	snprintf(out, len, "%.200s", target);
	slash = strrchr(target, '/');
	slash = slash ? slash + 1 : target;
	if (strlen(slash) < blen)
		memcpy(base, slash, strlen(slash) + 1);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The entries of a directory, sorted, space-separated. */
static void dir_str(const char *path, char *out, size_t len)
{
	char *names[64];
	struct dirent *de;
	size_t n = 0, i;
	DIR *d;

	out[0] = 0;
	errno = 0;
	d = opendir(path);
	if (!d) {
		snprintf(out, len, "-1 %s", errname(errno));
		return;
	}
	while ((de = readdir(d)) && n < 64) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (i = 0; i < n; i++) {
		snprintf(out + strlen(out), len - strlen(out), "%s%s",
			 i ? " " : "", names[i]);
		free(names[i]);
	}
	if (!n)
		snprintf(out, len, "(empty)");
}

/* A whole (small) file, lines joined with " | ". */
static void file_str(const char *path, char *out, size_t len)
{
	char buf[256];
	FILE *f;
	int n = 0;

	out[0] = 0;
	errno = 0;
	f = fopen(path, "r");
	if (!f) {
		snprintf(out, len, "-1 %s", errname(errno));
		return;
	}
	while (fgets(buf, sizeof(buf), f)) {
		char *nl = strchr(buf, '\n');

		if (nl)
			*nl = 0;
		snprintf(out + strlen(out), len - strlen(out), "%s%s",
			 n++ ? " | " : "", buf);
	}
	fclose(f);
	if (!n)
		snprintf(out, len, "(empty)");
}

/* ------------------------------------------------------------------ */
/* device access                                                       */

static int dev = -1;

static uint32_t cfg_read(unsigned int off, size_t size, const char *name)
{
	char label[128];
	uint32_t v = 0;
	ssize_t r;

	snprintf(label, sizeof(label), "config: %s (0x%02x/%zu)", name, off, size);
	errno = 0;
	r = pread(dev, &v, size, CFG + off);
	if (r == (ssize_t)size) {
		note(label, "0x%0*x", (int)(2 * size), v);
		return v;
	}
	if (r < 0)
		note(label, "-1 %s", errname(errno));
	else
		note(label, "short %zd", r);
	return 0;
}

static void cfg_write(unsigned int off, size_t size, uint32_t v,
		      const char *name)
{
	char label[128];
	ssize_t r;

	snprintf(label, sizeof(label), "config: write %s (0x%02x/%zu) 0x%0*x",
		 name, off, size, (int)(2 * size), v);
	errno = 0;
	r = pwrite(dev, &v, size, CFG + off);
	report(label, r, errno);
}

/* 32-bit MMIO read of an edu register; prints it. */
static uint32_t reg_read(unsigned int off, const char *name)
{
	char label[128];
	uint32_t v = 0;
	ssize_t r;

	snprintf(label, sizeof(label), "edu: read %s (0x%02x)", name, off);
	errno = 0;
	r = pread(dev, &v, 4, BAR0 + off);
	if (r == 4) {
		note(label, "0x%08x", v);
		return v;
	}
	if (r < 0)
		note(label, "-1 %s", errname(errno));
	else
		note(label, "short %zd", r);
	return 0xffffffffu;
}

static void reg_write(unsigned int off, uint32_t v, const char *name)
{
	char label[128];
	ssize_t r;

	snprintf(label, sizeof(label), "edu: write %s (0x%02x) 0x%08x", name,
		 off, v);
	errno = 0;
	r = pwrite(dev, &v, 4, BAR0 + off);
	report(label, r, errno);
}

/*
 * Polls register 'off' until (value & mask) == want, at most 'secs'
 * seconds; prints "done" or "timeout" (never the number of polls), then
 * the final value.
 */
static void reg_wait(unsigned int off, uint32_t mask, uint32_t want,
		     double secs, const char *what)
{
	double end = edu_now() + secs;
	uint32_t v;
	char label[160];

	for (;;) {
		v = edu_peek(dev, off);
		if (v != 0xffffffffu && (v & mask) == want)
			break;
		if (edu_now() > end) {
			v = 0xffffffffu;
			break;
		}
		usleep(1000);
	}
	snprintf(label, sizeof(label), "edu: wait %s", what);
	note(label, "%s", v == 0xffffffffu ? "timeout" : "done");
}

/*
 * Waits up to 'ms' for the eventfd; prints "fired (count N)" or "none".
 * The counter is read (so reset) when it fired.
 */
static int irq_wait(int efd, int ms, const char *what)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	char label[160];
	uint64_t cnt = 0;
	int r;

	snprintf(label, sizeof(label), "irq: %s", what);
	if (efd < 0) {
		note(label, "no eventfd");
		return 0;
	}
	errno = 0;
	r = poll(&pfd, 1, ms);
	if (r < 0) {
		note(label, "poll -1 %s", errname(errno));
		return 0;
	}
	if (r == 0) {
		note(label, "none");
		return 0;
	}
	if (read(efd, &cnt, sizeof(cnt)) != sizeof(cnt)) {
		note(label, "read -1 %s", errname(errno));
		return 0;
	}
	/* a level-triggered line may have been re-signalled meanwhile */
	note(label, "fired");
	return 1;
}

/* SET_IRQS with one eventfd (fd), or DATA_NONE with count 0 (fd == -2). */
static long set_irq(const char *what, uint32_t index, uint32_t action, int fd)
{
	struct {
		struct vfio_irq_set s;
		int32_t fd;
	} a;

	memset(&a, 0, sizeof(a));
	a.s.index = index;
	if (fd == -2) {
		a.s.argsz = sizeof(a.s);
		a.s.flags = VFIO_IRQ_SET_DATA_NONE | action;
		a.s.count = action == VFIO_IRQ_SET_ACTION_TRIGGER ? 0 : 1;
	} else {
		a.s.argsz = sizeof(a);
		a.s.flags = VFIO_IRQ_SET_DATA_EVENTFD | action;
		a.s.count = 1;
		a.fd = fd;
	}
	return ioc(what, dev, VFIO_DEVICE_SET_IRQS, &a);
}

/* One DMA transfer: program, start, wait for RUN to clear. */
static void dma(uint64_t src, uint64_t dst, uint32_t cnt, uint32_t cmd,
		const char *what)
{
	char label[160];

	snprintf(label, sizeof(label), "dma: %s: src=0x%llx dst=0x%llx cnt=0x%x cmd=0x%x",
		 what, (ull)src, (ull)dst, cnt, cmd);
	note(label, "start");
	reg_write(EDU_DMA_SRC, (uint32_t)src, "DMA src");
	reg_write(EDU_DMA_DST, (uint32_t)dst, "DMA dst");
	reg_write(EDU_DMA_CNT, cnt, "DMA count");
	reg_write(EDU_DMA_CMD, cmd, "DMA cmd");
	reg_wait(EDU_DMA_CMD, DMA_RUN, 0, 5.0, "DMA cmd RUN clear");
	reg_read(EDU_DMA_CMD, "DMA cmd");
}

static unsigned char pat(size_t i, unsigned int seed)
{
	return (unsigned char)((i * 7 + seed) ^ (i >> 8));
}

/* Describes 'len' bytes at 'b' against the pattern 'seed' / a fill byte. */
static void describe(const char *label, const unsigned char *b, size_t len,
		     unsigned int seed, int fill)
{
	size_t i, pmatch = 0, fmatch = 0, zero = 0, ff = 0;

	for (i = 0; i < len; i++) {
		pmatch += b[i] == pat(i, seed);
		fmatch += fill >= 0 && b[i] == (unsigned char)fill;
		zero += b[i] == 0;
		ff += b[i] == 0xff;
	}
	if (pmatch == len)
		note(label, "pattern %u (all 0x%zx bytes)", seed, len);
	else if (fill >= 0 && fmatch == len)
		note(label, "untouched (all 0x%02x)", fill);
	else if (zero == len)
		note(label, "all 0x00");
	else if (ff == len)
		note(label, "all 0xff");
	else
		note(label, "mixed: %zu pattern, %zu fill, %zu zero of 0x%zx; first bytes %02x %02x %02x %02x",
		     pmatch, fmatch, zero, len, b[0], b[1], b[2], b[3]);
}

static long map_dma(int cfd, void *va, uint64_t iova, uint64_t size,
		    const char *what)
{
	struct vfio_iommu_type1_dma_map m;

	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	m.vaddr = (uintptr_t)va;
	m.iova = iova;
	m.size = size;
	return ioc(what, cfd, VFIO_IOMMU_MAP_DMA, &m);
}

static void unmap_dma(int cfd, uint64_t iova, uint64_t size, const char *what)
{
	struct vfio_iommu_type1_dma_unmap u;

	memset(&u, 0, sizeof(u));
	u.argsz = sizeof(u);
	u.iova = iova;
	u.size = size;
	ioc(what, cfd, VFIO_IOMMU_UNMAP_DMA, &u);
	printf("%s.size = 0x%llx\n", cur, (ull)u.size);
}

int main(void)
{
	char group_name[64] = "", driver[64] = "", path[256];
	struct vfio_device_info dinfo;
	struct vfio_region_info rinfo;
	struct vfio_irq_info iinfo;
	struct vfio_group_status gs;
	unsigned char *buf1, *buf2;
	int cfd, gfd, efd, r, i;
	uint32_t cmd, v;
	long group = 1;
	unsigned int pos, msi_pos = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);

	/* ---- discovery through sysfs ---- */
	{
		char ids[512] = "", target[256], base[64], a[256], b[512];
		unsigned char c[4] = { 0 };
		int fd;
		ssize_t n;

		attr_cat(ids, sizeof(ids), "vendor");
		attr_cat(ids, sizeof(ids), "device");
		attr_cat(ids, sizeof(ids), "class");
		attr_cat(ids, sizeof(ids), "subsystem_vendor");
		attr_cat(ids, sizeof(ids), "subsystem_device");
		attr_cat(ids, sizeof(ids), "revision");
		/* the config file: the first 4 bytes (vendor, device) */
		errno = 0;
		fd = open(SYSDEV "/config", O_RDONLY);
		n = fd < 0 ? -1 : pread(fd, c, 4, 0);
		if (n == 4)
			snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids),
				 " config[0..3]=%02x %02x %02x %02x", c[0], c[1],
				 c[2], c[3]);
		else
			snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids),
				 " config[0..3]=-1 %s", errname(errno));
		if (fd >= 0)
			close(fd);
		note("sysfs: " BDF, "%s", ids);

		link_str("iommu_group", target, sizeof(target), group_name,
			 sizeof(group_name));
		if (group_name[0]) {
			char *end;
			long g = strtol(group_name, &end, 10);

			if (!*end && g >= 0)
				group = g;
		}
		note("sysfs: iommu_group", "%s -> group %ld%s", target, group,
		     group_name[0] ? "" : " (default)");

		link_str("driver", target, sizeof(target), base, sizeof(base));
		snprintf(driver, sizeof(driver), "%s", base);
		dir_str(SYSDEV "/vfio-dev", a, sizeof(a));
		note("sysfs: driver", "%s (%s, vfio-pci: %s); vfio-dev: %s",
		     target, driver[0] ? driver : "none",
		     strcmp(driver, "vfio-pci") ? "no" : "yes", a);

		snprintf(path, sizeof(path), "/sys/kernel/iommu_groups/%ld/devices",
			 group);
		dir_str(path, a, sizeof(a));
		snprintf(path, sizeof(path),
			 "/sys/kernel/iommu_groups/%ld/reserved_regions", group);
		file_str(path, b, sizeof(b));
		note("sysfs: iommu_groups/<group>", "devices: %s; reserved_regions: %s",
		     a, b);
	}

	/* ---- container, group, IOMMU, device ---- */
	errno = 0;
	cfd = open("/dev/vfio/vfio", O_RDWR);
	report("vfio: open /dev/vfio/vfio", cfd, errno);
	ioc_val("vfio: GET_API_VERSION", cfd, VFIO_GET_API_VERSION, 0);
	ioc_val("vfio: CHECK_EXTENSION(TYPE1v2)", cfd, VFIO_CHECK_EXTENSION,
		VFIO_TYPE1v2_IOMMU);
	snprintf(path, sizeof(path), "/dev/vfio/%ld", group);
	errno = 0;
	gfd = open(path, O_RDWR);
	report("vfio: open /dev/vfio/<group>", gfd, errno);
	memset(&gs, 0, sizeof(gs));
	gs.argsz = sizeof(gs);
	ioc("vfio: GROUP_GET_STATUS", gfd, VFIO_GROUP_GET_STATUS, &gs);
	note("vfio: GROUP_GET_STATUS.flags", "0x%x", gs.flags);
	ioc("vfio: GROUP_SET_CONTAINER", gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
	ioc_val("vfio: SET_IOMMU(TYPE1v2)", cfd, VFIO_SET_IOMMU,
		VFIO_TYPE1v2_IOMMU);
	errno = 0;
	dev = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, BDF);
	report("vfio: GROUP_GET_DEVICE_FD(" BDF ")", dev, errno);

	memset(&dinfo, 0, sizeof(dinfo));
	dinfo.argsz = sizeof(dinfo);
	ioc("device: GET_INFO", dev, VFIO_DEVICE_GET_INFO, &dinfo);
	note("device: GET_INFO", "flags=0x%x num_regions=%u num_irqs=%u",
	     dinfo.flags, dinfo.num_regions, dinfo.num_irqs);
	memset(&rinfo, 0, sizeof(rinfo));
	rinfo.argsz = sizeof(rinfo);
	rinfo.index = VFIO_PCI_BAR0_REGION_INDEX;
	ioc("device: GET_REGION_INFO(BAR0)", dev, VFIO_DEVICE_GET_REGION_INFO,
	    &rinfo);
	note("device: GET_REGION_INFO(BAR0)", "flags=0x%x size=0x%llx offset=0x%llx",
	     rinfo.flags, (ull)rinfo.size, (ull)rinfo.offset);
	memset(&rinfo, 0, sizeof(rinfo));
	rinfo.argsz = sizeof(rinfo);
	rinfo.index = VFIO_PCI_CONFIG_REGION_INDEX;
	ioc("device: GET_REGION_INFO(CONFIG)", dev, VFIO_DEVICE_GET_REGION_INFO,
	    &rinfo);
	note("device: GET_REGION_INFO(CONFIG)", "flags=0x%x size=0x%llx offset=0x%llx",
	     rinfo.flags, (ull)rinfo.size, (ull)rinfo.offset);
	for (i = VFIO_PCI_INTX_IRQ_INDEX; i <= VFIO_PCI_MSIX_IRQ_INDEX; i++) {
		char what[64];

		memset(&iinfo, 0, sizeof(iinfo));
		iinfo.argsz = sizeof(iinfo);
		iinfo.index = i;
		snprintf(what, sizeof(what), "device: GET_IRQ_INFO(%s)",
			 i == 0 ? "INTX" : i == 1 ? "MSI" : "MSIX");
		ioc(what, dev, VFIO_DEVICE_GET_IRQ_INFO, &iinfo);
		note(what, "flags=0x%x count=%u", iinfo.flags, iinfo.count);
	}

	/* ---- config space ---- */
	cfg_read(0x00, 2, "vendor");
	cfg_read(0x02, 2, "device");
	cmd = cfg_read(0x04, 2, "command");
	cfg_read(0x06, 2, "status");
	cfg_read(0x08, 1, "revision");
	cfg_read(0x09, 1, "prog-if");
	cfg_read(0x0a, 2, "class");
	cfg_read(0x0e, 1, "header type");
	cfg_read(0x10, 4, "BAR0");
	cfg_read(0x14, 4, "BAR1");
	cfg_read(0x2c, 2, "subsystem vendor");
	cfg_read(0x2e, 2, "subsystem device");
	cfg_read(0x3c, 1, "interrupt line");
	cfg_read(0x3d, 1, "interrupt pin");
	pos = cfg_read(0x34, 1, "capability pointer");
	for (i = 0; i < 4; i++) {
		/* the capability list: 4 lines, "end" once it stops */
		char label[64];
		uint8_t c[2] = { 0, 0 };

		snprintf(label, sizeof(label), "config: capability %d", i);
		if (!pos || pos >= 0x100) {
			note(label, "end");
			pos = 0;
			continue;
		}
		if (pread(dev, c, 2, CFG + pos) != 2) {
			note(label, "-1 %s", errname(errno));
			pos = 0;
			continue;
		}
		note(label, "id 0x%02x at 0x%02x, next 0x%02x", c[0], pos, c[1]);
		if (c[0] == 0x05)
			msi_pos = pos;
		pos = c[1];
	}
	if (msi_pos) {
		uint16_t fl = 0;

		if (pread(dev, &fl, 2, CFG + msi_pos + 2) == 2)
			note("config: MSI control", "0x%04x", fl);
		else
			note("config: MSI control", "-1 %s", errname(errno));
	} else {
		note("config: MSI control", "no MSI capability");
	}
	/* BAR sizing */
	v = cfg_read(0x10, 4, "BAR0");
	cfg_write(0x10, 4, 0xffffffff, "BAR0");
	cfg_read(0x10, 4, "BAR0 (sizing)");
	cfg_write(0x10, 4, v, "BAR0");
	cfg_read(0x10, 4, "BAR0");
	/* memory decode and bus mastering on */
	cfg_write(0x04, 2, (cmd & 0xffff) | 0x6, "command");
	cfg_read(0x04, 2, "command");

	/* ---- DMA buffers ---- */
	buf1 = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	buf2 = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf1 == MAP_FAILED || buf2 == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	for (i = 0; i < (int)BUFSZ; i++)
		buf1[i] = pat(i, 1);
	memset(buf2, 0xcc, BUFSZ);
	map_dma(cfd, buf1, IOVA1, BUFSZ, "dma: MAP_DMA(buf1,iova=0x100000,0x2000)");
	map_dma(cfd, buf2, IOVA2, BUFSZ, "dma: MAP_DMA(buf2,iova=0x200000,0x2000)");

	/* ---- identification and liveness ---- */
	reg_read(EDU_ID, "identification");
	reg_read(EDU_LIVENESS, "liveness");
	reg_write(EDU_LIVENESS, 0x12345678, "liveness");
	reg_read(EDU_LIVENESS, "liveness");
	reg_write(EDU_LIVENESS, 0, "liveness");
	reg_read(EDU_LIVENESS, "liveness");
	reg_read(EDU_STATUS, "status");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_read(0x0c, "unassigned 0x0c");
	reg_read(EDU_DMA_SRC, "DMA src");
	reg_read(EDU_DMA_CMD, "DMA cmd");

	/* ---- factorial, polling ---- */
	reg_write(EDU_FACT, 10, "factorial");
	reg_wait(EDU_STATUS, STATUS_COMPUTING, 0, 5.0, "status computing clear");
	reg_read(EDU_FACT, "factorial");
	reg_write(EDU_FACT, 12, "factorial");
	reg_wait(EDU_STATUS, STATUS_COMPUTING, 0, 5.0, "status computing clear");
	reg_read(EDU_FACT, "factorial");
	reg_write(EDU_FACT, 0, "factorial");
	reg_wait(EDU_STATUS, STATUS_COMPUTING, 0, 5.0, "status computing clear");
	reg_read(EDU_FACT, "factorial");
	reg_read(EDU_STATUS, "status");

	/* ---- MSI ---- */
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	report("irq: eventfd", efd < 0 ? -1 : 0, errno);
	set_irq("irq: SET_IRQS(MSI,EVENTFD|TRIGGER,efd)", VFIO_PCI_MSI_IRQ_INDEX,
		VFIO_IRQ_SET_ACTION_TRIGGER, efd);
	irq_wait(efd, 200, "after enabling MSI");
	cfg_read(0x42, 2, "MSI control");
	reg_write(EDU_IRQ_RAISE, 0x1, "interrupt raise");
	irq_wait(efd, 2000, "MSI after raise 0x1");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_RAISE, 0x12340000, "interrupt raise");
	irq_wait(efd, 2000, "MSI after raise 0x12340000");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, 0x12340000, "interrupt ack");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, 0x1, "interrupt ack");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	irq_wait(efd, 200, "MSI after ack");

	/* ---- factorial with the completion interrupt ---- */
	reg_write(EDU_STATUS, STATUS_IRQFACT, "status");
	reg_read(EDU_STATUS, "status");
	reg_write(EDU_FACT, 5, "factorial");
	irq_wait(efd, 5000, "MSI after factorial");
	reg_wait(EDU_STATUS, STATUS_COMPUTING, 0, 5.0, "status computing clear");
	reg_read(EDU_FACT, "factorial");
	reg_read(EDU_STATUS, "status");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, IRQ_FACT, "interrupt ack");
	reg_write(EDU_STATUS, 0, "status");
	reg_read(EDU_STATUS, "status");
	reg_read(EDU_IRQ_STATUS, "interrupt status");

	/* ---- DMA: RAM -> device -> RAM, with the DMA-done interrupt ---- */
	dma(IOVA1, EDU_BUF, XFER, DMA_RUN, "buf1 -> device");
	irq_wait(efd, 200, "MSI after DMA without IRQ flag");
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM | DMA_IRQ,
	    "device -> buf2, interrupt");
	irq_wait(efd, 5000, "MSI after DMA");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, IRQ_DMA, "interrupt ack");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	describe("dma: buf2[0x0000..0x0800]", buf2, XFER, 1, 0xcc);
	describe("dma: buf2[0x0800..0x2000]", buf2 + XFER, BUFSZ - XFER, 1, 0xcc);
	reg_read(EDU_DMA_SRC, "DMA src");
	reg_read(EDU_DMA_DST, "DMA dst");
	reg_read(EDU_DMA_CNT, "DMA count");
	/* the edu.rst example: 100 bytes to the device and back, shifted */
	dma(IOVA1 + 0x1000, EDU_BUF, 100, DMA_RUN, "buf1+0x1000 -> device, 100 bytes");
	dma(EDU_BUF, IOVA2 + 0x1000 + 100, 100, DMA_RUN | DMA_TO_RAM,
	    "device -> buf2+0x1000+100, 100 bytes");
	note("dma: buf2[0x1000..0x1064] untouched", "%s",
	     buf2[0x1000] == 0xcc && buf2[0x1063] == 0xcc ? "yes" : "no");
	note("dma: buf2[0x1064..0x10c8] == buf1[0x1000..0x1064]", "%s",
	     memcmp(buf2 + 0x1064, buf1 + 0x1000, 100) ? "no" : "yes");
	note("dma: buf2[0x10c8] untouched", "%s",
	     buf2[0x10c8] == 0xcc ? "yes" : "no");

	/* ---- DMA to and from unmapped IOVAs (IOMMU faults) ---- */
	for (i = 0; i < (int)BUFSZ; i++)
		buf2[i] = pat(i, 2);
	/* device buffer := pattern 1 again */
	dma(IOVA1, EDU_BUF, XFER, DMA_RUN, "buf1 -> device");
	dma(EDU_BUF, IOVA_HOLE, XFER, DMA_RUN | DMA_TO_RAM | DMA_IRQ,
	    "device -> unmapped 0x300000, interrupt");
	irq_wait(efd, 5000, "MSI after DMA to unmapped IOVA");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, IRQ_DMA, "interrupt ack");
	describe("fault: buf1", buf1, BUFSZ, 1, -1);
	describe("fault: buf2", buf2, BUFSZ, 2, -1);
	/* the write half-inside buf2: its last 0x400 bytes, then unmapped */
	dma(EDU_BUF, IOVA2 + 0x1c00, XFER, DMA_RUN | DMA_TO_RAM,
	    "device -> 0x201c00 (0x400 mapped, 0x400 unmapped)");
	describe("fault: buf2[0x0000..0x1c00]", buf2, 0x1c00, 2, -1);
	describe("fault: buf2[0x1c00..0x2000]", buf2 + 0x1c00, 0x400, 1, -1);
	/* a read from an unmapped IOVA into the device buffer */
	dma(IOVA_HOLE, EDU_BUF, XFER, DMA_RUN,
	    "unmapped 0x300000 -> device");
	for (i = 0; i < (int)BUFSZ; i++)
		buf2[i] = 0xcc;
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM,
	    "device -> buf2");
	describe("fault: device buffer after the faulted read", buf2, XFER, 1,
		 0xcc);
	describe("fault: buf2[0x0800..0x2000] after the faulted read",
		 buf2 + XFER, BUFSZ - XFER, 1, 0xcc);
	describe("fault: buf1 after the faulted read", buf1, BUFSZ, 1, -1);
	irq_wait(efd, 200, "MSI after faulted DMAs without IRQ flag");

	/* ---- INTx ---- */
	set_irq("irq: SET_IRQS(MSI,NONE|TRIGGER,count=0)", VFIO_PCI_MSI_IRQ_INDEX,
		VFIO_IRQ_SET_ACTION_TRIGGER, -2);
	set_irq("irq: SET_IRQS(INTX,EVENTFD|TRIGGER,efd)", VFIO_PCI_INTX_IRQ_INDEX,
		VFIO_IRQ_SET_ACTION_TRIGGER, efd);
	irq_wait(efd, 200, "after enabling INTx");
	reg_write(EDU_IRQ_RAISE, 0x1, "interrupt raise");
	irq_wait(efd, 2000, "INTx after raise 0x1");
	reg_write(EDU_IRQ_RAISE, 0x2, "interrupt raise");
	irq_wait(efd, 200, "INTx after raise 0x2 (masked)");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	set_irq("irq: SET_IRQS(INTX,NONE|UNMASK) while asserted",
		VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -2);
	irq_wait(efd, 2000, "INTx after unmask while asserted");
	reg_write(EDU_IRQ_ACK, 0x3, "interrupt ack");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	set_irq("irq: SET_IRQS(INTX,NONE|UNMASK) after ack",
		VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -2);
	irq_wait(efd, 200, "INTx after unmask after ack");
	dma(IOVA1, EDU_BUF, 0x100, DMA_RUN | DMA_IRQ, "buf1 -> device, interrupt");
	irq_wait(efd, 5000, "INTx after DMA");
	reg_read(EDU_IRQ_STATUS, "interrupt status");
	reg_write(EDU_IRQ_ACK, IRQ_DMA, "interrupt ack");
	set_irq("irq: SET_IRQS(INTX,NONE|UNMASK) after DMA",
		VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -2);
	irq_wait(efd, 200, "INTx after unmask after DMA");
	set_irq("irq: SET_IRQS(INTX,NONE|MASK)", VFIO_PCI_INTX_IRQ_INDEX,
		VFIO_IRQ_SET_ACTION_MASK, -2);
	reg_write(EDU_IRQ_RAISE, 0x4, "interrupt raise");
	irq_wait(efd, 200, "INTx after raise while masked");
	set_irq("irq: SET_IRQS(INTX,NONE|UNMASK) pending",
		VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -2);
	irq_wait(efd, 2000, "INTx after unmask of a pending line");
	reg_write(EDU_IRQ_ACK, 0x4, "interrupt ack");
	set_irq("irq: SET_IRQS(INTX,NONE|UNMASK) final",
		VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -2);
	irq_wait(efd, 200, "INTx at the end");
	set_irq("irq: SET_IRQS(INTX,NONE|TRIGGER,count=0)", VFIO_PCI_INTX_IRQ_INDEX,
		VFIO_IRQ_SET_ACTION_TRIGGER, -2);
	reg_read(EDU_IRQ_STATUS, "interrupt status");

	/* ---- reset, teardown ---- */
	reg_write(EDU_LIVENESS, 0x0badf00d, "liveness");
	ioc("device: DEVICE_RESET", dev, VFIO_DEVICE_RESET, NULL);
	reg_read(EDU_LIVENESS, "liveness");
	reg_read(EDU_ID, "identification");
	cfg_read(0x04, 2, "command");
	cfg_write(0x04, 2, cmd & 0xffff & ~0x4u, "command");
	unmap_dma(cfd, IOVA1, BUFSZ, "dma: UNMAP_DMA(0x100000,0x2000)");
	unmap_dma(cfd, IOVA2, BUFSZ, "dma: UNMAP_DMA(0x200000,0x2000)");
	errno = 0;
	r = close(dev);
	report("close: close(device)", r, errno);
	if (efd >= 0)
		close(efd);
	ioc("close: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	errno = 0;
	r = close(gfd);
	report("close: close(group)", r, errno);
	errno = 0;
	r = close(cfd);
	report("close: close(container)", r, errno);
	return 0;
}
